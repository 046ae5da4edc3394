// Text generation: the request is streamed (stream: true) and each token is appended as it
// arrives, with a running tokens/s; Stop aborts the fetch. Each token comes with its top
// alternatives (top_logprobs), shown by alternatives.js.

import { hide as hideAlternatives, tokenSpan } from "./alternatives.js";
import { api, ApiError, sseEvents } from "./api.js";
import { $, formValues, h, numbers, showError } from "./dom.js";

const ALTERNATIVES = 5; // top_logprobs asked for each generated token
let textAbort = null; // the running generation's AbortController

function textRequest(form) {
  const v = formValues(form);
  const body = {
    model: v.model,
    prompt: form.elements.prompt.value, // sent even when empty, which formValues would drop
    max_new_tokens: Number(v.max_new_tokens),
    stream: true,
    top_logprobs: ALTERNATIVES,
    ...numbers(v, ["temperature", "top_k", "top_p", "repetition_penalty", "seed"]),
  };
  // Typed escapes, so that a stop such as "\n\n" can be entered in a one-line field.
  if (v.stop) body.stop = v.stop.replace(/\\n/g, "\n").replace(/\\t/g, "\t");
  return body;
}

function setRunning(running) {
  $("#text-go").disabled = running;
  $("#text-stop").disabled = !running;
}

export async function generateText(form) {
  const body = textRequest(form);
  const out = $("#text-output");
  const generated = h("span", { class: "generated" });
  hideAlternatives();
  out.replaceChildren(h("span", { class: "prompt", text: body.prompt }), generated);
  out.dataset.state = "streaming";
  textAbort = new AbortController();
  setRunning(true);
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
    const signal = textAbort.signal;
    const response = await api("/generate/text", { json: body, headers, signal });
    for await (const { event: kind, data } of sseEvents(response)) {
      const payload = JSON.parse(data);
      if (kind === "error") throw new ApiError(500, payload);
      if (kind === "token") {
        // A span per token when it came with its alternatives; a stop string may leave none.
        if (payload.token && payload.text) generated.append(tokenSpan(payload.text, payload.token));
        else generated.append(payload.text);
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
    setRunning(false);
  }
}

export function stopText() {
  if (textAbort) textAbort.abort();
}
