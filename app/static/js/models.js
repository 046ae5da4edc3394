// Models: the list from GET /models feeds both the model pickers of the other panels (each
// starting on the server's default model of its task) and the Models panel, where an admin
// sees each version's lineage, aliases and traffic weight, and activates, aliases, splits
// traffic, deletes a version or archives a model.

import { api, getJSON } from "./api.js";
import { $, cell, confirmAction, formatNumber, h, onSubmit, setStatus, smallButton } from "./dom.js";

let models = [];

export async function loadModels() {
  models = (await getJSON("/models")).data;
  fillModelSelects();
  renderModels();
}

const path = (name) => `/models/${encodeURIComponent(name)}`;
export const activeVersion = (model) => model && model.versions.find((v) => v.is_active);

// Which flag of GET /models marks a picker's default: `default` (its task's), or the one its
// data-default-flag names (the VAE panel's `default_vae`, what /images/* requests get).
const isDefault = (m, select) => Boolean(m[select.dataset.defaultFlag || "default"]);

// The model a select stands for: the picked one, or with the empty choice the server's default.
export function modelOf(select) {
  if (select.value) return models.find((m) => m.name === select.value);
  return models.find((m) => isDefault(m, select) && offered(m, select.dataset));
}

// Whether model `m` belongs in a picker: its task, input and (data-kind) active version's kind.
function offered(m, { task, input, kind }) {
  if (m.task !== task || (input && m.input !== input)) return false;
  return !kind || (activeVersion(m) || {}).kind === kind;
}

// Each <select data-task> offers the served models of its task (and input, and with data-kind
// only that kind: the VAE panel's image-vae models). It keeps the
// user's choice while it is still there, else starts on the model the server marks `default`
// (what a request naming none gets), never merely the first by name. With data-default-label,
// first an empty choice that leaves the model to the server, named after that default.
// A "change" event tells the panel that the options (maybe the model) changed.
function fillModelSelects() {
  for (const select of document.querySelectorAll("select[data-task]")) {
    const served = models.filter((m) => m.active_version !== null && offered(m, select.dataset));
    const previous = select.value;
    const kept = served.some((m) => m.name === previous);
    const fallback = served.find((m) => isDefault(m, select)) || served[0];
    const options = served.map((m) => h("option", { value: m.name, text: m.name }));
    const label = select.dataset.defaultLabel;
    if (label) {
      const named = fallback && isDefault(fallback, select) ? `${label} (${fallback.name})` : label;
      options.unshift(h("option", { value: "", text: named }));
    }
    select.replaceChildren(...options);
    if (kept) select.value = previous;
    else select.value = label || !fallback ? "" : fallback.name;
    select.dispatchEvent(new Event("change"));
  }
}

export function showVersion(select) {
  const out = document.getElementById(`${select.id}-version`);
  const model = modelOf(select);
  if (out) out.textContent = model ? `v${model.active_version} (other versions: Models)` : "";
}

// {"eval": {"loss": 1.2}} -> ["eval.loss=1.200"]
function flatMetrics(metrics, prefix = "") {
  return Object.entries(metrics || {}).flatMap(([key, value]) =>
    value && typeof value === "object" && !Array.isArray(value)
      ? flatMetrics(value, `${prefix}${key}.`)
      : [`${prefix}${key}=${Array.isArray(value) ? value.join(",") : formatNumber(value)}`],
  );
}

// Re-rendered after every action: the open Manage sections stay open, and a keyboard user
// keeps their place (the buttons' labels name their model and version, so they find it again).
function renderModels() {
  const list = $("#models-list");
  const manageOpen = list.querySelectorAll("details.manage[open]");
  const open = new Set([...manageOpen].map((d) => d.dataset.model));
  const focused = list.contains(document.activeElement)
    ? document.activeElement.getAttribute("aria-label")
    : null;
  list.replaceChildren(...models.map((m) => modelCard(m, open.has(m.name))));
  if (!models.length) list.append(h("p", { class: "hint", text: "No models yet." }));
  const again = focused && [...list.querySelectorAll("[aria-label]")].find(
    (el) => el.getAttribute("aria-label") === focused,
  );
  if (again) again.focus();
}

const VERSION_COLUMNS = ["Version", "Lineage", "Metrics", "Serving", "Actions"];

function modelCard(model, manageOpen) {
  const versions = [...model.versions].sort((a, b) => b.version - a.version);
  const head = VERSION_COLUMNS.map((t) => h("th", { scope: "col", text: t }));
  const ids = model.workers.join(", ");
  const workers = model.workers.length ? `served by worker ${ids}` : "not loaded";
  return h(
    "article",
    { class: "model", "aria-label": model.name },
    h(
      "h3",
      {},
      model.name,
      model.default ? h("span", { class: "badge", text: "default" }) : null,
      h("small", { text: `${model.task} · ${workers}` }),
    ),
    h("p", { class: "hint", text: model.description }),
    h(
      "dl",
      { class: "facts" },
      h("dt", { text: "Aliases" }),
      h("dd", { class: "aliases" }, ...aliasChips(model)),
      h("dt", { text: "Traffic" }),
      h("dd", { class: "traffic", text: trafficText(model) }),
    ),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "reflow", "aria-label": `Versions of ${model.name}` },
        h("thead", {}, h("tr", {}, ...head)),
        h("tbody", {}, ...versions.map((v) => versionRow(model, v))),
      ),
    ),
    manage(model, versions, manageOpen),
  );
}

function aliasChips(model) {
  const entries = Object.entries(model.aliases || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return ["none"];
  return entries.map(([alias, version]) =>
    h(
      "span",
      { class: "chip", "data-alias": alias },
      `${alias} → v${version} `,
      smallButton("Remove", `Remove alias ${alias} of ${model.name}`, () =>
        removeAlias(model.name, alias),
      ),
    ),
  );
}

function trafficText(model) {
  const split = Object.entries(model.traffic || {});
  if (!split.length) return `all to the active version (v${model.active_version ?? "–"})`;
  const total = split.reduce((sum, [, weight]) => sum + weight, 0) || 1;
  return split
    .sort(([a], [b]) => Number(a) - Number(b))
    .map(([version, weight]) => `v${version}: ${Math.round((100 * weight) / total)} %`)
    .join(", ");
}

// Where a version came from: its dataset, the version it was fine-tuned from, the job that
// trained it, and the params it was trained with.
function lineage(v) {
  const facts = [
    v.dataset_name || v.dataset_id
      ? `dataset ${v.dataset_name || `#${v.dataset_id}`}`
      : null,
    v.parent ? `from ${v.parent.model} v${v.parent.version}` : null,
    v.job_id ? `job #${v.job_id}` : null,
    v.source === "trained" ? null : v.source,
  ].filter(Boolean);
  const params = flatMetrics(v.params);
  return [
    h("span", { text: `${v.kind}, ${new Date(v.created_at).toLocaleString()}` }),
    h("br"),
    h("span", { class: "lineage", text: facts.join(" · ") || "–" }),
    params.length
      ? h(
          "details",
          { class: "params" },
          h("summary", { text: `params (${params.length})` }),
          h("span", { class: "metrics", text: params.join("  ") }),
        )
      : null,
  ];
}

function versionRow(model, v) {
  const label = `${model.name} v${v.version}`;
  const serving = [
    v.is_active ? h("span", { class: "badge", text: "active" }) : null,
    !v.is_active && (model.loaded || []).includes(v.version)
      ? h("span", { class: "badge loaded", text: "loaded" })
      : null,
    ...v.aliases.map((alias) => h("span", { class: "badge alias", text: `@${alias}` })),
    v.traffic ? h("span", { class: "badge traffic", text: `traffic ${v.traffic} %` }) : null,
  ].filter(Boolean);
  return h(
    "tr",
    { "data-version": v.version },
    cell("Version", { text: `v${v.version}` }),
    cell("Lineage", {}, ...lineage(v)),
    cell("Metrics", { class: "metrics", text: flatMetrics(v.metrics).join("  ") || "–" }),
    cell("Serving", {}, ...(serving.length ? serving : ["–"])),
    cell(
      "Actions",
      { class: "row-actions" },
      ...(v.is_active // the served version: another one is activated first
        ? ["–"]
        : [
            smallButton("Activate", `Activate ${label}`, () => activate(model.name, v.version)),
            smallButton("Delete", `Delete ${label}`, () => deleteVersion(model.name, v.version), {
              class: "small danger",
            }),
          ]),
    ),
  );
}

// The admin's forms of one model: an alias, the traffic split, archiving. Kept open across
// the refreshes that each action makes.
function manage(model, versions, open) {
  const options = versions.map((v) => h("option", { value: v.version, text: `v${v.version}` }));
  const aliasForm = h(
    "form",
    { class: "inline-form", "aria-label": `Set an alias of ${model.name}` },
    h(
      "label",
      {},
      "Alias",
      h("input", {
        name: "alias",
        required: true,
        pattern: "[A-Za-z][A-Za-z0-9_.\\-]{0,63}",
        title: "letters, digits, _ . -; starts with a letter",
        placeholder: "staging",
      }),
    ),
    h("label", {}, "Version", h("select", { name: "version" }, ...options)),
    h("button", {
      type: "submit",
      class: "small",
      text: "Set alias",
      "aria-label": `Set the alias of ${model.name}`,
    }),
  );
  onSubmit(aliasForm, (form) =>
    setAlias(model.name, form.elements.alias.value.trim(), Number(form.elements.version.value)),
  );
  const weights = versions.map((v) => {
    const weight = { name: v.version, type: "number", min: 0, max: 100, value: v.traffic };
    return h("label", {}, `v${v.version} weight`, h("input", weight));
  });
  const trafficForm = h(
    "form",
    { class: "inline-form", "aria-label": `Traffic split of ${model.name}` },
    ...weights,
    h("button", {
      type: "submit",
      class: "small",
      text: "Set split",
      "aria-label": `Set the traffic split of ${model.name}`,
    }),
    smallButton(
      "Clear split",
      `Clear the traffic split of ${model.name}`,
      () => setTraffic(model.name, {}),
      { class: "small secondary" },
    ),
  );
  onSubmit(trafficForm, (form) => setTraffic(model.name, splitOf(form)));
  return h(
    "details",
    { class: "manage", "data-model": model.name, open: open || null },
    h("summary", { text: `Manage ${model.name}` }),
    aliasForm,
    h("p", {
      class: "hint",
      text: "Requests that name no version are split by these weights, which add up to 100.",
    }),
    trafficForm,
    smallButton("Archive model", `Archive ${model.name}`, () => archive(model.name), {
      class: "small danger",
    }),
  );
}

// {"3": 90, "4": 10} from the weight fields; zero weights are left out.
function splitOf(form) {
  const split = {};
  for (const input of form.querySelectorAll("input[type=number]")) {
    const weight = Number(input.value);
    if (weight > 0) split[input.name] = weight;
  }
  return split;
}

async function activate(name, version) {
  setStatus(`Activating ${name} v${version}…`);
  await api(`${path(name)}/versions/${version}/activate`, { method: "POST" });
  await loadModels();
  setStatus(`${name} v${version} is now served.`);
}

async function setAlias(name, alias, version) {
  await api(`${path(name)}/aliases/${encodeURIComponent(alias)}`, {
    method: "PUT",
    json: { version },
  });
  await loadModels();
  setStatus(`${name}@${alias} now points at v${version}.`);
}

async function removeAlias(name, alias) {
  if (!(await confirmAction(`Remove the alias ${alias} of ${name}?`, "Remove alias"))) return;
  await api(`${path(name)}/aliases/${encodeURIComponent(alias)}`, { method: "DELETE" });
  await loadModels();
  setStatus(`Alias ${alias} of ${name} removed.`);
}

async function setTraffic(name, split) {
  await api(`${path(name)}/traffic`, { json: split });
  await loadModels();
  const shown = Object.entries(split).map(([v, w]) => `v${v}: ${w}`);
  setStatus(shown.length ? `${name} traffic: ${shown.join(", ")}.` : `${name} traffic cleared.`);
}

async function deleteVersion(name, version) {
  const question = `Delete ${name} v${version}? Its artifact is removed for good.`;
  if (!(await confirmAction(question, "Delete version"))) return;
  await api(`${path(name)}/versions/${version}`, { method: "DELETE" });
  await loadModels();
  setStatus(`${name} v${version} deleted.`);
}

async function archive(name) {
  const question = `Archive ${name}? It is no longer served nor listed.`;
  if (!(await confirmAction(question, "Archive model"))) return;
  await api(path(name), { method: "DELETE" });
  await loadModels();
  setStatus(`${name} archived.`);
}
