// Every API call goes through api(): it sends the key kept in this tab, turns the server's
// error body into an ApiError, and on 401/403 asks for a key and tries again.

import { $ } from "./dom.js";

const KEY_STORAGE = "genserve.apiKey";

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `request failed with status ${status}`);
    this.status = status;
    this.code = error.code;
    this.details = error.details;
  }
}

// sessionStorage, not localStorage: the key goes away with the tab.
export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
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

// The error body as JSON, or a message made from whatever came back (a proxy's HTML page).
async function readBody(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return { error: { message: text || response.statusText } };
  }
}

// options: json (sent as the body), or body; headers, method, signal.
export async function api(path, options = {}, attempt = 0) {
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

export const getJSON = async (path) => (await api(path)).json();
export const postJSON = async (path, json) => (await api(path, { json })).json();

// Server-sent events from a fetch() body (EventSource cannot POST): yields {event, data}.
export async function* sseEvents(response) {
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
