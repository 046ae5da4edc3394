// Small DOM helpers shared by every panel: an element builder, the status line, the one
// place where a failed action is turned into a visible message, and the confirmation dialog.

export const $ = (selector) => document.querySelector(selector);

// h("p", { class: "hint", text: "…", onclick: fn }, child, …): attributes, text and listeners
// in one call; null, undefined and false leave an attribute (or a child) out.
export function h(tag, attrs = {}, ...children) {
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

// A table cell that carries its column's name, shown beside the value when the table reflows
// into one card per row on a phone (style.css, table.reflow).
export const cell = (column, attrs = {}, ...children) =>
  h("td", { "data-label": column, ...attrs }, ...children);

// The small buttons in table rows (Activate, Curve, Cancel); their failures are shown.
export function smallButton(text, label, action, attrs = {}) {
  const onclick = () => userAction(action);
  const common = { type: "button", class: "small", text, "aria-label": label, onclick };
  return h("button", { ...common, ...attrs });
}

export function formatNumber(value) {
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? String(value) : value.toPrecision(4);
}

export function setStatus(message, isError = false) {
  const status = $("#status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

export function showError(target, error) {
  const message = error instanceof Error ? error.message : String(error);
  if (target) target.replaceChildren(h("p", { class: "error", role: "alert", text: message }));
  setStatus(message, true);
}

// Runs an async handler; its failures are shown, never left as unhandled rejections.
export async function guard(fn, target = null) {
  try {
    return await fn();
  } catch (error) {
    if (error.name !== "AbortError") showError(target, error);
    return undefined;
  }
}

// Something the user asked for: the last message goes (an old error must not outlive a
// success), and a failure is shown in `target` and the status line. Background work (the job
// poll) uses guard() alone, so that it never wipes a message the user has not read.
export function userAction(fn, target = null) {
  setStatus("");
  return guard(fn, target);
}

// A form handled in the page: no navigation, and a failure is shown in `target`.
export function onSubmit(selector, handler, target = null) {
  const form = typeof selector === "string" ? $(selector) : selector;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    userAction(() => handler(event.target), target);
  });
}

// Asks before a destructive action; resolves true only when the user confirms.
export function confirmAction(message, action) {
  const dialog = $("#confirm-dialog");
  $("#confirm-dialog-message").textContent = message;
  $("#confirm-dialog-ok").textContent = action;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("#confirm-dialog-cancel").focus(); // the safe choice is the one Enter picks
  });
}

// The named, non-empty, enabled fields of a form, as strings: a disabled field is one that
// does not apply to the chosen model, and is not sent (as a browser would not submit it).
export function formValues(form) {
  const values = {};
  for (const el of form.elements) {
    if (el.name && !el.disabled && el.value !== "") values[el.name] = el.value;
  }
  return values;
}

// Those of `keys` that were filled in, as numbers; empty ones are left to the server's default.
export function numbers(values, keys) {
  return Object.fromEntries(keys.filter((key) => key in values).map((k) => [k, Number(values[k])]));
}
