// Training: a job form built from GET /train/kinds, the latest jobs with live progress, and
// the selected job's curves, all refreshed by one poll loop.

import { api, getJSON, postJSON } from "./api.js";
import { drawChart } from "./chart.js";
import { $, cell, formatNumber, guard, h, setStatus, smallButton } from "./dom.js";
import { loadModels } from "./models.js";

const TERMINAL = ["succeeded", "failed", "cancelled"];
const POLL_MS = 1000;
const IDLE_POLL_MS = 5000;

const isOver = (status) => TERMINAL.includes(status);

const state = {
  kinds: [],
  datasets: [],
  jobStatus: new Map(), // job id -> last status seen, to notice jobs that finish
  selectedJob: null,
  drawn: null, // the finished job whose chart is on screen
  pollTimer: null,
};

export async function loadTraining() {
  const [kinds, datasets] = await Promise.all([getJSON("/train/kinds"), getJSON("/datasets")]);
  state.kinds = kinds.data;
  state.datasets = datasets.data;
  const select = $("#train-kind");
  select.replaceChildren(...state.kinds.map((k) => h("option", { value: k.kind, text: k.kind })));
  showKind();
  await pollJobs();
}

// The picked kind decides which datasets fit and which parameters the form shows.
export function showKind() {
  const kind = state.kinds.find((k) => k.kind === $("#train-kind").value);
  if (!kind) return;
  const takes = kind.dataset_kinds.join(", ");
  $("#train-kind-help").textContent = `${kind.description} (datasets: ${takes})`;
  const usable = state.datasets.filter((d) => kind.dataset_kinds.includes(d.kind));
  $("#train-dataset").replaceChildren(
    ...usable.map((d) => h("option", { value: d.id, text: `${d.name} (${d.kind})` })),
  );
  const legend = $("#train-params legend");
  $("#train-params").replaceChildren(legend, ...kind.params.map(paramField));
}

// One field per parameter, by its JSON-schema type; choices are kept as JSON so that
// true, 3 and "3" come back apart.
function paramField(param) {
  const id = `param-${param.name}`;
  const shown = param.default === null || param.default === undefined ? "" : param.default;
  const common = { id, name: `param.${param.name}`, title: param.description || null };
  let input;
  if (param.enum || param.type.startsWith("boolean")) {
    const choices = param.enum || [true, false];
    const options = choices.map((c) => h("option", { value: JSON.stringify(c), text: String(c) }));
    if (param.type.includes("null")) options.unshift(h("option", { value: "", text: "auto" }));
    input = h("select", common, ...options);
    input.value = shown === "" ? "" : JSON.stringify(shown);
  } else if (param.type === "integer" || param.type === "number") {
    input = h("input", {
      ...common,
      type: "number",
      step: param.type === "integer" ? 1 : "any",
      min: param.minimum ?? null,
      max: param.maximum ?? null,
    });
    input.value = shown;
  } else {
    input = h("input", { ...common, type: "text" });
    input.value = typeof shown === "string" ? shown : JSON.stringify(shown);
  }
  input.dataset.default = input.value;
  return h("label", { for: id }, param.name, input);
}

// Only changed fields are sent, so the server's defaults stay the defaults.
function changedParams(form) {
  const params = {};
  for (const el of form.querySelectorAll("[name^='param.']")) {
    if (el.value === el.dataset.default || el.value === "") continue;
    const name = el.name.slice("param.".length);
    if (el.type === "number") params[name] = Number(el.value);
    else {
      try {
        params[name] = JSON.parse(el.value);
      } catch {
        params[name] = el.value;
      }
    }
  }
  return params;
}

export async function submitJob(form) {
  const body = {
    kind: form.elements.kind.value,
    dataset: Number(form.elements.dataset.value),
    name: form.elements.name.value.trim(),
    params: changedParams(form),
    activate: form.elements.activate.checked,
  };
  const job = await postJSON("/train", body);
  state.selectedJob = job.id;
  setStatus(`Job ${job.id} queued: ${job.kind} → ${job.name}.`);
  await pollJobs();
}

async function cancelJob(id) {
  await api(`/train/${id}/cancel`, { method: "POST" });
  setStatus(`Job ${id} cancelled.`);
  await pollJobs();
}

async function selectJob(id) {
  state.selectedJob = id;
  await pollJobs();
}

// One poll loop: the job list and the selected job's history, every second while any runs.
async function pollJobs() {
  clearTimeout(state.pollTimer);
  const jobs = (await getJSON("/train?limit=20")).data;
  let finished = false;
  for (const job of jobs) {
    const before = state.jobStatus.get(job.id);
    if (before && !isOver(before) && job.status === "succeeded") finished = true;
    state.jobStatus.set(job.id, job.status);
  }
  renderJobs(jobs);
  const selected = state.selectedJob;
  if (selected !== null && state.drawn !== selected) {
    const job = await getJSON(`/train/${selected}`);
    const ended = isOver(job.status);
    drawChart(job, ended);
    state.drawn = ended ? job.id : null; // a finished curve: once
  }
  if (finished) await loadModels(); // it registered a new version
  // Fast while something trains; slowly otherwise, to see jobs started elsewhere. A failed
  // poll throws before this line, which stops the loop (no dialog every few seconds).
  const active = jobs.some((job) => !isOver(job.status));
  state.pollTimer = setTimeout(() => guard(pollJobs), active ? POLL_MS : IDLE_POLL_MS);
}

const shown = (value) => (value === undefined || value === null ? "–" : formatNumber(value));

function renderJobs(jobs) {
  const focused = document.activeElement && document.activeElement.dataset.focusKey;
  const rows = jobs.map((job) => {
    const m = job.metrics;
    const loss = m.loss ?? m.val_loss ?? m.train_loss ?? m.final_train_loss;
    const accuracy = m.test_accuracy ?? m.val_accuracy ?? m.accuracy;
    const selected = job.id === state.selectedJob;
    const status = [job.status, job.error].filter(Boolean).join(": ");
    // data-focus-key finds the focused button again in the rows that replace these ones.
    const secondary = (key) => ({ class: "small secondary", "data-focus-key": `${key}-${job.id}` });
    const cancel = () => cancelJob(job.id);
    return h(
      "tr",
      { class: selected ? "selected" : null, "data-job": job.id },
      cell("Job", { text: `#${job.id}` }),
      cell("Model", { text: `${job.name} (${job.kind})` }),
      cell("Status", { class: `st-${job.status}`, text: status }),
      cell(
        "Progress",
        {},
        h("progress", { max: 1, value: job.progress, "aria-label": `job ${job.id} progress` }),
        ` ${Math.round(job.progress * 100)} %`,
      ),
      cell("Loss", { text: shown(loss) }),
      cell("Accuracy", { text: shown(accuracy) }),
      cell(
        "Actions",
        { class: "row-actions" },
        smallButton("Curve", `Show the curves of job ${job.id}`, () => selectJob(job.id), {
          ...secondary("curve"),
          "aria-pressed": String(selected),
        }),
        isOver(job.status)
          ? null
          : smallButton("Cancel", `Cancel job ${job.id}`, cancel, secondary("cancel")),
      ),
    );
  });
  $("#jobs-body").replaceChildren(...rows);
  if (!jobs.length) {
    const empty = h("td", { colspan: 7, class: "hint", text: "No jobs yet." });
    $("#jobs-body").append(h("tr", {}, empty));
  }
  const again = focused && document.querySelector(`[data-focus-key="${focused}"]`);
  if (again) again.focus(); // a keyboard user keeps their place across refreshes
}
