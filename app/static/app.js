"use strict";
// genserve playground: plain JS, no build step, nothing loaded from outside this server.
// Every API call goes through api(), which sends the key and asks for one on 401/403.

const $ = (selector) => document.querySelector(selector);
const KEY_STORAGE = "genserve.apiKey";
const TERMINAL = ["succeeded", "failed", "cancelled"];
const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"];
const POLL_MS = 1000;
const IDLE_POLL_MS = 5000;

const state = {
  models: [],
  kinds: [],
  datasets: [],
  jobStatus: new Map(), // job id -> last status seen, to notice jobs that finish
  selectedJob: null,
  drawn: null, // the finished job whose chart is on screen
  imageSizes: {}, // classifier name -> [height, width] it takes, learnt from its 422
  pollTimer: null,
  textAbort: null,
};

// ---- small helpers -------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") el.textContent = value;
    else if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  el.append(...children.filter((child) => child !== null && child !== undefined));
  return el;
}

function formatNumber(value) {
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? String(value) : value.toPrecision(4);
}

function setStatus(message, isError = false) {
  const status = $("#status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function showError(target, error) {
  const message = error instanceof Error ? error.message : String(error);
  if (target) target.replaceChildren(h("p", { class: "error", role: "alert", text: message }));
  setStatus(message, true);
}

// Runs an async handler; its failures are shown, never left as unhandled rejections.
async function guard(fn, target = null) {
  try {
    return await fn();
  } catch (error) {
    if (error.name !== "AbortError") showError(target, error);
    return undefined;
  }
}

function formValues(form) {
  const values = {};
  for (const el of form.elements) {
    if (el.name && el.value !== "") values[el.name] = el.value;
  }
  return values;
}

// ---- API key and requests -------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `request failed with status ${status}`);
    this.status = status;
    this.code = error.code;
    this.details = error.details;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  $("#key-input").value = key;
}

let keyPrompt = null; // one dialog however many requests were refused at once

function askForKey(message) {
  if (keyPrompt) return keyPrompt;
  const dialog = $("#key-dialog");
  $("#key-dialog-message").textContent = message;
  $("#key-dialog-input").value = "";
  dialog.returnValue = "";
  keyPrompt = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        keyPrompt = null;
        const key = dialog.returnValue === "ok" ? $("#key-dialog-input").value.trim() : "";
        if (key) setApiKey(key);
        resolve(Boolean(key));
      },
      { once: true },
    );
  });
  dialog.showModal();
  return keyPrompt;
}

async function readBody(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return { error: { message: text || response.statusText } };
  }
}

async function api(path, options = {}, attempt = 0) {
  const headers = new Headers(options.headers || {});
  let body = options.body;
  if (options.json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(options.json);
  }
  if (apiKey()) headers.set("Authorization", `Bearer ${apiKey()}`);
  const method = options.method || (body === undefined ? "GET" : "POST");
  const response = await fetch(path, { method, headers, body, signal: options.signal });
  if (response.ok) return response;
  const error = new ApiError(response.status, await readBody(response));
  if ((error.status === 401 || error.status === 403) && attempt < 3) {
    if (await askForKey(error.message)) return api(path, options, attempt + 1);
  }
  throw error;
}

const getJSON = async (path) => (await api(path)).json();
const postJSON = async (path, json) => (await api(path, { json })).json();

// ---- models ---------------------------------------------------------------------------------

async function loadModels() {
  state.models = (await getJSON("/models")).data;
  fillModelSelects();
  renderModels();
}

function fillModelSelects() {
  for (const select of document.querySelectorAll("select[data-task]")) {
    const { task, input } = select.dataset;
    const served = state.models.filter(
      (m) => m.task === task && m.active_version !== null && (!input || m.input === input),
    );
    const previous = select.value;
    select.replaceChildren(...served.map((m) => h("option", { value: m.name, text: m.name })));
    if (served.some((m) => m.name === previous)) select.value = previous;
    showVersion(select);
  }
}

function showVersion(select) {
  const out = document.getElementById(`${select.id}-version`);
  const model = state.models.find((m) => m.name === select.value);
  if (out) out.textContent = model ? `v${model.active_version} (other versions: Models)` : "";
}

function flatMetrics(metrics, prefix = "") {
  return Object.entries(metrics || {}).flatMap(([key, value]) =>
    value && typeof value === "object" && !Array.isArray(value)
      ? flatMetrics(value, `${prefix}${key}.`)
      : [`${prefix}${key}=${formatNumber(value)}`],
  );
}

function renderModels() {
  const list = $("#models-list");
  list.replaceChildren(...state.models.map(modelCard));
  if (!state.models.length) list.append(h("p", { class: "hint", text: "No models yet." }));
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
            : h("button", {
                type: "button",
                class: "small",
                text: "Activate",
                "aria-label": `Activate ${model.name} v${v.version}`,
                onclick: () => guard(() => activate(model.name, v.version)),
              }),
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

// ---- text generation ------------------------------------------------------------------------

// Server-sent events from a fetch() body (EventSource cannot POST): yields {event, data}.
async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const blocks = buffer.split(/\r\n\r\n|\n\n|\r\r/);
    buffer = blocks.pop();
    for (const block of blocks) {
      const message = { event: "message", data: [] };
      for (const line of block.split(/\r\n|\r|\n/)) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") message.event = text;
        else if (field === "data") message.data.push(text);
      }
      if (message.data.length) yield { event: message.event, data: message.data.join("\n") };
    }
  }
}

function textRequest(form) {
  const v = formValues(form);
  const body = {
    model: v.model,
    prompt: form.elements.prompt.value,
    max_new_tokens: Number(v.max_new_tokens),
    stream: true,
  };
  for (const key of ["temperature", "top_k", "top_p", "repetition_penalty", "seed"]) {
    if (key in v) body[key] = Number(v[key]);
  }
  if (v.stop) body.stop = v.stop.replace(/\\n/g, "\n").replace(/\\t/g, "\t");
  return body;
}

async function generateText(event) {
  event.preventDefault();
  const body = textRequest(event.target);
  const out = $("#text-output");
  const generated = document.createTextNode("");
  out.replaceChildren(h("span", { class: "prompt", text: body.prompt }), generated);
  out.dataset.state = "streaming";
  state.textAbort = new AbortController();
  $("#text-go").disabled = true;
  $("#text-stop").disabled = false;
  const started = performance.now();
  let tokens = 0;
  const stats = (extra) => {
    const seconds = (performance.now() - started) / 1000;
    const rate = tokens / Math.max(seconds, 1e-3);
    $("#text-stats").textContent = `${tokens} tokens, ${seconds.toFixed(1)} s, ${rate.toFixed(
      0,
    )} tokens/s${extra}`;
  };
  try {
    const headers = { Accept: "text/event-stream" };
    const signal = state.textAbort.signal;
    const response = await api("/generate/text", { json: body, headers, signal });
    for await (const { event: kind, data } of sseEvents(response)) {
      const payload = JSON.parse(data);
      if (kind === "error") throw new ApiError(500, payload);
      if (kind === "token") {
        generated.appendData(payload.text);
        tokens = payload.completion_tokens;
        out.scrollTop = out.scrollHeight;
        stats("");
      } else if (kind === "done") {
        stats(`, finished: ${payload.choices[0].finish_reason}`);
      }
    }
  } catch (error) {
    if (error.name === "AbortError") stats(", stopped");
    else showError($("#text-stats"), error);
  } finally {
    out.dataset.state = "done";
    $("#text-go").disabled = false;
    $("#text-stop").disabled = true;
  }
}

// ---- image generation -----------------------------------------------------------------------

async function generateImage(event) {
  event.preventDefault();
  const v = formValues(event.target);
  const body = { model: v.model, n: Number(v.n), truncation: Number(v.truncation || 1) };
  if ("seed" in v) body.seed = Number(v.seed);
  if ("label" in v) body.label = Number(v.label);
  const response = await api("/generate/image", { json: body, headers: { Accept: "image/png" } });
  const url = URL.createObjectURL(await response.blob());
  const img = $("#image-output");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  const what = "label" in body ? `digit ${body.label}` : "any label";
  img.alt = `${body.n} images generated by ${body.model}, ${what}, seed ${body.seed ?? "random"}`;
  img.src = url;
  img.hidden = false;
  $("#image-caption").textContent = img.alt;
}

// ---- classification -------------------------------------------------------------------------

function renderResults(target, results, inputs) {
  target.replaceChildren(
    ...results.map((result, i) => {
      const scores = Object.entries(result.scores).map(([label, p]) =>
        h(
          "li",
          {},
          h("span", { text: label }),
          h("meter", { min: 0, max: 1, value: p, "aria-label": `${label} probability` }),
          h("span", { text: p.toFixed(3) }),
        ),
      );
      return h(
        "div",
        { class: "result" },
        inputs ? h("p", { class: "hint", text: `“${inputs[i]}”` }) : null,
        h(
          "p",
          {},
          h("span", { class: "result-label", text: result.label }),
          ` (${(result.score * 100).toFixed(1)} %)`,
        ),
        h("ul", { class: "scores" }, ...scores),
      );
    }),
  );
}

async function classifyText(event) {
  event.preventDefault();
  const form = event.target;
  const inputs = form.elements.inputs.value.split("\n").map((s) => s.trim()).filter(Boolean);
  const target = $("#classify-text-result");
  if (!inputs.length) return showError(target, "Type a sentence first.");
  const body = { model: form.elements.model.value, inputs, top_k: 3 };
  renderResults(target, (await postJSON("/classify", body)).results, inputs);
}

const canvas = () => $("#digit-canvas");
const drawing2d = () => canvas().getContext("2d", { willReadFrequently: true });

function clearCanvas() {
  const ctx = drawing2d();
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas().width, canvas().height);
  const preview = $("#digit-preview");
  preview.getContext("2d").clearRect(0, 0, preview.width, preview.height);
}

function setupDrawing() {
  const el = canvas();
  const ctx = drawing2d();
  let drawing = false;
  const point = (e) => {
    const rect = el.getBoundingClientRect();
    const x = ((e.clientX - rect.left) * el.width) / rect.width;
    return [x, ((e.clientY - rect.top) * el.height) / rect.height];
  };
  el.addEventListener("pointerdown", (e) => {
    drawing = true;
    el.setPointerCapture(e.pointerId);
    Object.assign(ctx, { strokeStyle: "#fff", lineWidth: 16, lineCap: "round", lineJoin: "round" });
    ctx.beginPath();
    ctx.moveTo(...point(e));
  });
  el.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.lineTo(...point(e));
    ctx.stroke();
  });
  const stop = () => {
    if (drawing) modelPixels(imageSizeFor($("#classify-image-model").value));
    drawing = false;
  };
  el.addEventListener("pointerup", stop);
  el.addEventListener("pointercancel", stop);
}

// An uploaded picture goes onto the canvas as bright ink on dark, whatever it was.
async function loadDigitFile(event) {
  const file = event.target.files[0];
  if (!file) return;
  const bitmap = await createImageBitmap(file);
  const el = canvas();
  const scale = Math.min(el.width / bitmap.width, el.height / bitmap.height);
  const w = Math.max(1, Math.round(bitmap.width * scale));
  const h2 = Math.max(1, Math.round(bitmap.height * scale));
  const tmp = new OffscreenCanvas(w, h2).getContext("2d", { willReadFrequently: true });
  tmp.fillStyle = "#fff"; // transparent pixels count as paper
  tmp.fillRect(0, 0, w, h2);
  tmp.drawImage(bitmap, 0, 0, w, h2);
  const image = tmp.getImageData(0, 0, w, h2);
  const gray = grayscale(image.data);
  const invert = borderMean(gray, w, h2) > 127;
  gray.forEach((g, i) => {
    const v = invert ? 255 - g : g;
    image.data.set([v, v, v, 255], i * 4);
  });
  clearCanvas();
  const [left, top] = [Math.floor((el.width - w) / 2), Math.floor((el.height - h2) / 2)];
  drawing2d().putImageData(image, left, top);
  modelPixels(imageSizeFor($("#classify-image-model").value));
}

function grayscale(rgba) {
  const gray = new Float32Array(rgba.length / 4);
  for (let i = 0; i < gray.length; i++) {
    gray[i] = (rgba[4 * i] + rgba[4 * i + 1] + rgba[4 * i + 2]) / 3;
  }
  return gray;
}

function borderMean(gray, w, h2) {
  let sum = 0;
  let count = 0;
  for (let y = 0; y < h2; y++) {
    for (let x = 0; x < w; x++) {
      if (x === 0 || y === 0 || x === w - 1 || y === h2 - 1) {
        sum += gray[y * w + x];
        count++;
      }
    }
  }
  return sum / Math.max(count, 1);
}

function imageSizeFor(model) {
  return state.imageSizes[model] || [8, 8];
}

// The drawing cropped to its ink, centred in a square and box-averaged down to the model's
// size (sklearn digits fill their 8x8 frame; MNIST digits sit in 20x20 of 28x28).
function modelPixels([height, width]) {
  const el = canvas();
  const gray = grayscale(drawing2d().getImageData(0, 0, el.width, el.height).data);
  let [x0, y0, x1, y1] = [el.width, el.height, -1, -1];
  gray.forEach((g, i) => {
    if (g < 40) return;
    const [x, y] = [i % el.width, Math.floor(i / el.width)];
    [x0, y0, x1, y1] = [Math.min(x0, x), Math.min(y0, y), Math.max(x1, x), Math.max(y1, y)];
  });
  if (x1 < 0) return null;
  const side = Math.max(x1 - x0, y1 - y0, 8) * (width <= 8 ? 1.15 : 1.4);
  const [left, top] = [(x0 + x1 - side) / 2, (y0 + y1 - side) / 2];
  const pixels = new Float32Array(width * height);
  for (let y = 0; y < el.height; y++) {
    for (let x = 0; x < el.width; x++) {
      const tx = Math.floor(((x - left) * width) / side);
      const ty = Math.floor(((y - top) * height) / side);
      if (tx >= 0 && ty >= 0 && tx < width && ty < height) {
        pixels[ty * width + tx] += gray[y * el.width + x];
      }
    }
  }
  const peak = Math.max(...pixels, 1);
  const preview = $("#digit-preview");
  [preview.width, preview.height] = [width, height];
  const ctx = preview.getContext("2d");
  const image = ctx.createImageData(width, height);
  pixels.forEach((p, i) => {
    const v = Math.round((255 * p) / peak);
    image.data.set([v, v, v, 255], i * 4);
  });
  ctx.putImageData(image, 0, 0);
  return preview.toDataURL("image/png").split(",")[1];
}

async function classifyDigit(event) {
  event.preventDefault();
  const model = event.target.elements.model.value;
  const target = $("#classify-image-result");
  for (let attempt = 0; attempt < 2; attempt++) {
    const png = modelPixels(imageSizeFor(model));
    if (!png) return showError(target, "Draw or upload a digit first.");
    try {
      const body = await postJSON("/classify", { model, images: [png], top_k: 3 });
      return renderResults(target, body.results, null);
    } catch (error) {
      const expected = error.details && error.details.expected;
      if (error.code !== "invalid_image_size" || !expected || attempt) throw error;
      state.imageSizes[model] = [expected.height, expected.width];
    }
  }
}

// ---- training -------------------------------------------------------------------------------

async function loadTraining() {
  const [kinds, datasets] = await Promise.all([getJSON("/train/kinds"), getJSON("/datasets")]);
  state.kinds = kinds.data;
  state.datasets = datasets.data;
  const select = $("#train-kind");
  select.replaceChildren(...state.kinds.map((k) => h("option", { value: k.kind, text: k.kind })));
  showKind();
  await pollJobs();
}

function showKind() {
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

async function submitJob(event) {
  event.preventDefault();
  const form = event.target;
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

// One poll loop: the job list and the selected job's history, every second while any runs.
async function pollJobs() {
  clearTimeout(state.pollTimer);
  const jobs = (await getJSON("/train?limit=20")).data;
  let finished = false;
  for (const job of jobs) {
    const before = state.jobStatus.get(job.id);
    if (before && !TERMINAL.includes(before) && job.status === "succeeded") finished = true;
    state.jobStatus.set(job.id, job.status);
  }
  renderJobs(jobs);
  const selected = state.selectedJob;
  if (selected !== null && state.drawn !== selected) {
    const job = await getJSON(`/train/${selected}`);
    drawChart(job);
    state.drawn = TERMINAL.includes(job.status) ? job.id : null; // a finished curve: once
  }
  if (finished) await loadModels();
  // Fast while something trains; slowly otherwise, to see jobs started elsewhere. A failed
  // poll throws before this line, which stops the loop (no dialog every few seconds).
  const active = jobs.some((job) => !TERMINAL.includes(job.status));
  state.pollTimer = setTimeout(() => guard(pollJobs), active ? POLL_MS : IDLE_POLL_MS);
}

function renderJobs(jobs) {
  const focused = document.activeElement && document.activeElement.dataset.focusKey;
  const rows = jobs.map((job) => {
    const loss = job.metrics.loss ?? job.metrics.val_loss ?? job.metrics.train_loss;
    const running = !TERMINAL.includes(job.status);
    const selected = job.id === state.selectedJob;
    const status = [job.status, job.error].filter(Boolean).join(": ");
    return h(
      "tr",
      { class: selected ? "selected" : null, "data-job": job.id },
      h("td", { text: `#${job.id}` }),
      h("td", { text: `${job.name} (${job.kind})` }),
      h("td", { class: `st-${job.status}`, text: status }),
      h(
        "td",
        {},
        h("progress", { max: 1, value: job.progress, "aria-label": `job ${job.id} progress` }),
        ` ${Math.round(job.progress * 100)} %`,
      ),
      h("td", { text: loss === undefined ? "–" : formatNumber(loss) }),
      h(
        "td",
        {},
        h("button", {
          type: "button",
          class: "small secondary",
          text: "Curve",
          "aria-pressed": String(selected),
          "aria-label": `Show the loss curve of job ${job.id}`,
          "data-focus-key": `curve-${job.id}`,
          onclick: () => guard(() => selectJob(job.id)),
        }),
        running
          ? h("button", {
              type: "button",
              class: "small secondary",
              text: "Cancel",
              "aria-label": `Cancel job ${job.id}`,
              "data-focus-key": `cancel-${job.id}`,
              onclick: () => guard(() => cancelJob(job.id)),
            })
          : null,
      ),
    );
  });
  $("#jobs-body").replaceChildren(...rows);
  if (!jobs.length) {
    const empty = h("td", { colspan: 6, class: "hint", text: "No jobs yet." });
    $("#jobs-body").append(h("tr", {}, empty));
  }
  const again = focused && document.querySelector(`[data-focus-key="${focused}"]`);
  if (again) again.focus(); // a keyboard user keeps their place across refreshes
}

async function selectJob(id) {
  state.selectedJob = id;
  await pollJobs();
}

// Loss curves from the job's metric history, drawn on a canvas: one line per loss metric.
function drawChart(job) {
  const figure = $("#job-chart");
  const el = $("#loss-canvas");
  const history = job.history || [];
  const numeric = [...new Set(history.flatMap((row) => Object.keys(row.values)))].filter(
    (key) => key !== "step" && history.some((row) => typeof row.values[key] === "number"),
  );
  const losses = numeric.filter((key) => key.includes("loss"));
  const keys = losses.length ? losses : numeric.filter((key) => key !== "epoch");
  const series = keys.map((key) =>
    history
      .filter((row) => typeof row.values[key] === "number")
      .map((row) => [row.step, row.values[key]]),
  );
  figure.hidden = false;
  el.dataset.points = String(history.length);
  const title = `Job #${job.id} ${job.name}: ${job.status}, ${history.length} points`;
  $("#job-chart-title").textContent = title;
  const summary = keys.map((key, i) => {
    const points = series[i];
    return `${key} ${formatNumber(points[0][1])} to ${formatNumber(points[points.length - 1][1])}`;
  });
  const described = summary.join("; ") || "no points yet";
  el.setAttribute("aria-label", `Loss curves of job ${job.id}: ${described}`);
  $("#loss-legend").replaceChildren(
    ...keys.map((key, i) => {
      const swatch = h("span");
      swatch.style.background = COLORS[i % COLORS.length];
      const last = series[i][series[i].length - 1][1];
      return h("li", {}, swatch, `${key} ${formatNumber(last)}`);
    }),
  );
  const ended = TERMINAL.includes(job.status);
  plot(el, series, ended ? "No metric history." : "Waiting for the first evaluation…");
}

function plot(el, series, emptyText) {
  const [width, height] = [640, 260];
  const ratio = window.devicePixelRatio || 1;
  [el.width, el.height] = [width * ratio, height * ratio];
  const ctx = el.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const ink = getComputedStyle(document.body).color;
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = ink;
  const points = series.flat();
  if (!points.length) {
    ctx.fillText(emptyText, 16, height / 2);
    return;
  }
  const pad = { left: 52, right: 12, top: 12, bottom: 28 };
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const [xMin, xMax] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  let [yMin, yMax] = [Math.min(...ys), Math.max(...ys)];
  if (yMax - yMin < 1e-9) [yMin, yMax] = [yMin - 0.5, yMax + 0.5];
  const x = (v) => pad.left + ((v - xMin) / (xMax - xMin)) * (width - pad.left - pad.right);
  const y = (v) => pad.top + ((yMax - v) / (yMax - yMin)) * (height - pad.top - pad.bottom);
  ctx.strokeStyle = "rgba(128, 128, 128, 0.35)";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const value = yMin + ((yMax - yMin) * i) / 4;
    ctx.beginPath();
    ctx.moveTo(pad.left, y(value));
    ctx.lineTo(width - pad.right, y(value));
    ctx.stroke();
    ctx.fillText(value.toPrecision(3), 4, y(value) + 4);
  }
  ctx.fillText(`step ${xMin}`, pad.left, height - 8);
  const label = `step ${xMax}`;
  ctx.fillText(label, width - pad.right - ctx.measureText(label).width, height - 8);
  series.forEach((line, i) => {
    ctx.strokeStyle = ctx.fillStyle = COLORS[i % COLORS.length];
    ctx.lineWidth = 2;
    ctx.beginPath();
    line.forEach(([sx, sy], j) => (j ? ctx.lineTo(x(sx), y(sy)) : ctx.moveTo(x(sx), y(sy))));
    ctx.stroke();
    for (const [sx, sy] of line) ctx.fillRect(x(sx) - 2, y(sy) - 2, 4, 4);
  });
}

// ---- start ----------------------------------------------------------------------------------

function wire() {
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey($("#key-input").value.trim());
    setStatus("API key saved for this tab.");
    refreshAll();
  });
  $("#key-clear").addEventListener("click", () => {
    setApiKey("");
    setStatus("API key cleared.");
  });
  $("#key-dialog-cancel").addEventListener("click", () => $("#key-dialog").close(""));
  for (const select of document.querySelectorAll("select[data-task]")) {
    select.addEventListener("change", () => showVersion(select));
  }
  $("#text-form").addEventListener("submit", (e) => guard(() => generateText(e), $("#text-stats")));
  $("#text-stop").addEventListener("click", () => state.textAbort && state.textAbort.abort());
  const imageError = $("#image-caption");
  $("#image-form").addEventListener("submit", (e) => guard(() => generateImage(e), imageError));
  const textResult = $("#classify-text-result");
  const imageResult = $("#classify-image-result");
  $("#classify-text-form").addEventListener("submit", (e) =>
    guard(() => classifyText(e), textResult),
  );
  $("#classify-image-form").addEventListener("submit", (e) =>
    guard(() => classifyDigit(e), imageResult),
  );
  $("#digit-file").addEventListener("change", (e) => guard(() => loadDigitFile(e), imageResult));
  $("#digit-clear").addEventListener("click", () => {
    clearCanvas();
    $("#digit-file").value = "";
    imageResult.replaceChildren();
  });
  $("#train-kind").addEventListener("change", showKind);
  $("#train-form").addEventListener("submit", (e) => guard(() => submitJob(e)));
  $("#models-refresh").addEventListener("click", () => guard(loadModels));
  setupDrawing();
  clearCanvas();
}

function refreshAll() {
  return Promise.all([guard(loadModels), guard(loadTraining)]);
}

wire();
$("#key-input").value = apiKey();
refreshAll();
