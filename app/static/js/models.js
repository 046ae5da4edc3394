// Models: the list from GET /models feeds both the model pickers of the other panels and the
// Models panel, where another version can be activated.

import { api, getJSON } from "./api.js";
import { $, formatNumber, h, setStatus, smallButton } from "./dom.js";

let models = [];

export async function loadModels() {
  models = (await getJSON("/models")).data;
  fillModelSelects();
  renderModels();
}

// Each <select data-task> offers the served models of its task (and input kind), keeping the
// user's choice when it is still there; with data-default-label, first an empty choice that
// leaves the model to the server's default.
function fillModelSelects() {
  for (const select of document.querySelectorAll("select[data-task]")) {
    const { task, input } = select.dataset;
    const served = models.filter(
      (m) => m.task === task && m.active_version !== null && (!input || m.input === input),
    );
    const previous = select.value;
    const options = served.map((m) => h("option", { value: m.name, text: m.name }));
    const label = select.dataset.defaultLabel;
    if (label) options.unshift(h("option", { value: "", text: label }));
    select.replaceChildren(...options);
    if (served.some((m) => m.name === previous)) select.value = previous;
    showVersion(select);
  }
}

export function showVersion(select) {
  const out = document.getElementById(`${select.id}-version`);
  const model = models.find((m) => m.name === select.value);
  if (out) out.textContent = model ? `v${model.active_version} (other versions: Models)` : "";
}

// {"eval": {"loss": 1.2}} -> ["eval.loss=1.200"]
function flatMetrics(metrics, prefix = "") {
  return Object.entries(metrics || {}).flatMap(([key, value]) =>
    value && typeof value === "object" && !Array.isArray(value)
      ? flatMetrics(value, `${prefix}${key}.`)
      : [`${prefix}${key}=${formatNumber(value)}`],
  );
}

function renderModels() {
  const list = $("#models-list");
  list.replaceChildren(...models.map(modelCard));
  if (!models.length) list.append(h("p", { class: "hint", text: "No models yet." }));
}

function modelCard(model) {
  const rows = [...model.versions]
    .sort((a, b) => b.version - a.version)
    .map((v) =>
      h(
        "tr",
        {},
        h("td", { text: `v${v.version}` }),
        h("td", { text: v.kind }),
        h("td", { text: new Date(v.created_at).toLocaleString() }),
        h("td", { class: "metrics", text: flatMetrics(v.metrics).join("  ") || "–" }),
        h(
          "td",
          {},
          v.is_active
            ? h("span", { class: "badge", text: "active" })
            : smallButton("Activate", `Activate ${model.name} v${v.version}`, () =>
                activate(model.name, v.version),
              ),
        ),
      ),
    );
  const head = ["Version", "Kind", "Created", "Metrics", "Status"].map((t) =>
    h("th", { scope: "col", text: t }),
  );
  const ids = model.workers.join(", ");
  const workers = model.workers.length ? `served by worker ${ids}` : "not loaded";
  return h(
    "article",
    { class: "model", "aria-label": model.name },
    h("h3", {}, model.name, h("small", { text: `${model.task} · ${workers}` })),
    h("p", { class: "hint", text: model.description }),
    h(
      "div",
      { class: "table-wrap" },
      h("table", {}, h("thead", {}, h("tr", {}, ...head)), h("tbody", {}, ...rows)),
    ),
  );
}

async function activate(name, version) {
  setStatus(`Activating ${name} v${version}…`);
  await api(`/models/${encodeURIComponent(name)}/versions/${version}/activate`, { method: "POST" });
  await loadModels();
  setStatus(`${name} v${version} is now served.`);
}
