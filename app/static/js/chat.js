// Chat: OpenAI's /v1/chat/completions, streamed. The conversation so far is sent with every
// message; the reply streams into the last bubble (fetch + SSE `data:` lines, ending with
// [DONE]); Stop aborts it and keeps what came. A failed turn is taken back: its message goes
// back into the input and the error into the tab's status line.

import { api, ApiError, sseEvents } from "./api.js";
import { $, formValues, h, numbers } from "./dom.js";

let history = []; // {role, content} of every finished turn, the system message aside
let chatAbort = null; // the running reply's AbortController

function setChatStatus(message, isError = false) {
  const status = $("#chat-status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function setRunning(running) {
  $("#chat-send").disabled = running;
  $("#chat-stop").disabled = !running;
}

function bubble(role, text) {
  const body = h("div", { class: "msg-text", text });
  const who = role === "user" ? "You" : "Assistant";
  const el = h("div", { class: `msg ${role}` }, h("span", { class: "msg-who", text: who }), body);
  $("#chat-log").append(el);
  return { el, body };
}

function scrollToEnd() {
  const log = $("#chat-log");
  log.scrollTop = log.scrollHeight;
}

function chatRequest(form, text) {
  const v = formValues(form);
  const system = v.system ? [{ role: "system", content: v.system }] : [];
  return {
    ...(v.model ? { model: v.model } : {}), // none: the server's default model
    messages: [...system, ...history, { role: "user", content: text }],
    stream: true,
    stream_options: { include_usage: true },
    ...numbers(v, ["temperature", "max_tokens", "seed"]),
  };
}

// Appends each chunk's content to `body`; returns the reply, its finish reason and usage.
async function streamReply(response, body) {
  const reply = { text: "", finish: null, usage: null };
  for await (const { data } of sseEvents(response)) {
    if (data === "[DONE]") break;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new ApiError(500, chunk); // the generation failed mid-stream
    if (chunk.usage) reply.usage = chunk.usage;
    const choice = chunk.choices && chunk.choices[0];
    if (!choice) continue;
    if (choice.delta && choice.delta.content) {
      reply.text += choice.delta.content;
      body.textContent = reply.text;
      scrollToEnd();
    }
    if (choice.finish_reason) reply.finish = choice.finish_reason;
  }
  return reply;
}

export async function sendChat(form) {
  const input = $("#chat-input");
  const text = input.value;
  if (chatAbort || !text.trim()) return;
  const body = chatRequest(form, text);
  const asked = bubble("user", text);
  const answer = bubble("assistant", "");
  answer.el.classList.add("streaming");
  answer.el.setAttribute("aria-busy", "true"); // read once complete, not token by token
  scrollToEnd();
  input.value = "";
  chatAbort = new AbortController();
  setRunning(true);
  setChatStatus("Replying…");
  try {
    const headers = { Accept: "text/event-stream" };
    const signal = chatAbort.signal;
    const response = await api("/v1/chat/completions", { json: body, headers, signal });
    const reply = await streamReply(response, answer.body);
    if (!answer.el.isConnected) return; // New chat was pressed meanwhile
    history.push({ role: "user", content: text }, { role: "assistant", content: reply.text });
    const tokens = reply.usage ? `${reply.usage.completion_tokens} tokens, ` : "";
    setChatStatus(`${tokens}finished: ${reply.finish || "length"}`);
    if (!reply.text) answer.body.append(h("span", { class: "hint", text: "(empty reply)" }));
  } catch (error) {
    if (!answer.el.isConnected) return;
    const stopped = error.name === "AbortError";
    const partial = answer.body.textContent;
    if (stopped && partial) {
      // What came so far is the reply: the conversation goes on from it.
      history.push({ role: "user", content: text }, { role: "assistant", content: partial });
      answer.el.classList.add("stopped");
      setChatStatus("Stopped.");
    } else {
      asked.el.remove();
      answer.el.remove();
      if (!input.value) input.value = text; // to send again
      if (stopped) setChatStatus("Stopped before the reply began.");
      else setChatStatus(error.message || String(error), true);
    }
  } finally {
    answer.el.classList.remove("streaming");
    answer.el.removeAttribute("aria-busy");
    chatAbort = null;
    setRunning(false);
    const focused = document.activeElement;
    if (!focused || focused === document.body || focused.disabled) input.focus();
  }
}

export function stopChat() {
  if (chatAbort) chatAbort.abort();
}

export function clearChat() {
  stopChat();
  history = [];
  $("#chat-log").replaceChildren();
  setChatStatus("");
  $("#chat-input").focus();
}

// Enter sends, Shift+Enter is a new line (and so is Enter while an IME composes).
export function chatKeydown(event) {
  if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
  event.preventDefault();
  if (!chatAbort) event.target.form.requestSubmit();
}
