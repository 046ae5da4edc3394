// The text panel's token alternatives: each generated token is a <span class="tok"> that keeps
// what the model weighed at that place (the token event's `top_logprobs`). Hovering a token,
// tapping it, or moving onto it with the arrow keys (once the output has focus) shows them in
// #token-alts, a box under the token that describes the focused token to screen readers.
// Tokens are not tab stops: the output is one, and ← → Home End move between its tokens.

import { $, h } from "./dom.js";

const infos = new WeakMap(); // span -> the event's token: {token, id, logprob, top_logprobs}
let shown = null; // the span whose alternatives are in the box

export function tokenSpan(text, info) {
  const span = h("span", { class: "tok", tabindex: "-1", text });
  infos.set(span, info);
  return span;
}

// Whitespace made visible: a token is often a lone space or newline.
function visible(token) {
  if (!token) return "∅";
  const escapes = { "\n": "\\n", "\r": "\\r", "\t": "\\t", " ": "␣" };
  return token.replace(/[\n\r\t ]/g, (c) => escapes[c]);
}

function percent(logprob) {
  if (logprob === null || logprob === undefined) return "–";
  const p = Math.exp(logprob) * 100;
  if (p >= 1) return `${p.toFixed(1)}%`;
  return p >= 0.01 ? `${p.toPrecision(2)}%` : "<0.01%";
}

function row(alt, chosen) {
  return h(
    "li",
    { class: chosen ? "chosen" : null },
    h("code", { class: "result-label", text: visible(alt.token) }),
    h("meter", { min: 0, max: 1, value: alt.logprob == null ? 0 : Math.exp(alt.logprob) }),
    h("span", { text: percent(alt.logprob) }),
    chosen ? h("span", { class: "visually-hidden", text: "(chosen)" }) : null,
  );
}

function render(info) {
  const top = info.top_logprobs || [];
  const rows = top.map((alt) => row(alt, alt.id === info.id));
  const inTop = top.some((alt) => alt.id === info.id);
  if (!inTop) rows.push(row(info, true)); // sampled from outside the top k
  $("#token-alts").replaceChildren(
    h(
      "p",
      { class: "alts-title" },
      "Chose ",
      h("code", { text: visible(info.token) }),
      ` (${percent(info.logprob)})${inTop ? "" : `, not in the top ${top.length}`}`,
    ),
    h("ul", { class: "scores", "aria-label": `Top ${top.length} alternatives` }, ...rows),
  );
}

// Under the token, kept inside the output's width so that a phone never scrolls sideways;
// out of sight while the output is scrolled so that the token is not in view.
function place(span) {
  const box = $("#token-alts");
  const view = box.parentElement.getBoundingClientRect();
  const token = span.getBoundingClientRect();
  const out = span.closest(".output").getBoundingClientRect();
  box.hidden = token.bottom <= out.top || token.top >= out.bottom;
  const room = Math.max(box.parentElement.clientWidth - box.offsetWidth, 0);
  box.style.left = `${Math.min(Math.max(token.left - view.left, 0), room)}px`; // CSSOM: allowed
  box.style.top = `${token.bottom - view.top + 4}px`;
}

function show(span) {
  const info = infos.get(span);
  if (!info) return;
  if (shown && shown !== span) hide();
  shown = span;
  span.classList.add("active");
  span.setAttribute("aria-describedby", "token-alts");
  render(info);
  place(span);
}

export function hide() {
  if (shown) {
    shown.classList.remove("active");
    shown.removeAttribute("aria-describedby");
  }
  shown = null;
  $("#token-alts").hidden = true;
}

function focusedToken(out) {
  const el = document.activeElement;
  return el && el !== out && out.contains(el) && infos.has(el) ? el : null;
}

function move(event, out) {
  const spans = [...out.querySelectorAll(".tok")];
  if (!spans.length) return;
  const current = focusedToken(out);
  const i = current ? spans.indexOf(current) : -1;
  let next;
  if (event.key === "ArrowRight") next = i < 0 ? 0 : Math.min(i + 1, spans.length - 1);
  else if (event.key === "ArrowLeft") next = i < 0 ? spans.length - 1 : Math.max(i - 1, 0);
  else if (event.key === "Home" && i >= 0) next = 0;
  else if (event.key === "End" && i >= 0) next = spans.length - 1;
  else if (event.key === "Escape" && i >= 0) {
    event.preventDefault();
    hide();
    out.focus();
    return;
  } else return;
  event.preventDefault();
  spans[next].focus();
}

export function setupAlternatives(out) {
  out.addEventListener("mouseover", (event) => {
    const span = event.target.closest && event.target.closest(".tok");
    if (span) show(span);
  });
  out.addEventListener("mouseleave", () => {
    const focused = focusedToken(out);
    if (focused) show(focused);
    else hide();
  });
  out.addEventListener("focusin", (event) => {
    if (infos.has(event.target)) show(event.target);
  });
  out.addEventListener("focusout", (event) => {
    if (!out.contains(event.relatedTarget)) hide();
  });
  out.addEventListener("keydown", (event) => move(event, out));
  out.addEventListener("scroll", () => shown && place(shown), { passive: true });
  window.addEventListener("resize", () => shown && place(shown));
}
