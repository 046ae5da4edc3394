// A training job's curves from its metric history, drawn on canvases (no chart library: the
// page loads nothing from outside the server): one line per metric, losses on one chart and
// accuracies (a classifier's) on another, as their scales differ.

import { $, formatNumber, h } from "./dom.js";

const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"];
const color = (i) => COLORS[i % COLORS.length];
const last = (points) => points[points.length - 1][1];
const isAccuracy = (key) => /acc/.test(key);

// `ended`: the job is over, so an empty history will stay empty.
export function drawChart(job, ended) {
  const history = job.history || [];
  const numeric = [...new Set(history.flatMap((row) => Object.keys(row.values)))].filter(
    (key) => key !== "step" && history.some((row) => typeof row.values[key] === "number"),
  );
  const accuracies = numeric.filter(isAccuracy);
  // The losses when there are any, else every other number but the epoch counter.
  const losses = numeric.filter((key) => key.includes("loss"));
  const others = numeric.filter((key) => key !== "epoch" && !isAccuracy(key));
  $("#job-chart").hidden = false;
  const title = `Job #${job.id} ${job.name}: ${job.status}, ${history.length} points`;
  $("#job-chart-title").textContent = title;
  const waiting = ended ? "No metric history." : "Waiting for the first evaluation…";
  const lossKeys = losses.length ? losses : others;
  $("#loss-part").hidden = !lossKeys.length && accuracies.length > 0;
  drawPart("loss", "Loss", job, lossKeys, waiting);
  $("#accuracy-part").hidden = !accuracies.length;
  drawPart("accuracy", "Accuracy", job, accuracies, waiting);
}

// One chart: #<part>-canvas and its legend #<part>-legend.
function drawPart(part, what, job, keys, emptyText) {
  const history = job.history || [];
  const el = $(`#${part}-canvas`);
  const series = keys.map((key) =>
    history
      .filter((row) => typeof row.values[key] === "number")
      .map((row) => [row.step, row.values[key]]),
  );
  el.dataset.points = String(history.length); // what the browser tests watch grow
  // A canvas says nothing to a screen reader: its label carries the first and last values.
  const summary = keys.map((key, i) => {
    const points = series[i];
    return `${key} ${formatNumber(points[0][1])} to ${formatNumber(last(points))}`;
  });
  const described = summary.join("; ") || "no points yet";
  el.setAttribute("aria-label", `${what} curves of job ${job.id}: ${described}`);
  $(`#${part}-legend`).replaceChildren(
    ...keys.map((key, i) => {
      const swatch = h("span");
      swatch.style.background = color(i); // CSSOM, not a style attribute: the CSP allows it
      return h("li", {}, swatch, `${key} ${formatNumber(last(series[i]))}`);
    }),
  );
  plot(el, series, emptyText);
}

function plot(el, series, emptyText) {
  const [width, height] = [640, 260];
  // Sharp on high-density screens: a bigger backing store, drawn in CSS pixels.
  const ratio = window.devicePixelRatio || 1;
  [el.width, el.height] = [width * ratio, height * ratio];
  const ctx = el.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const ink = getComputedStyle(document.body).color; // follows the light or dark theme
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
    ctx.strokeStyle = ctx.fillStyle = color(i);
    ctx.lineWidth = 2;
    ctx.beginPath();
    line.forEach(([sx, sy], j) => (j ? ctx.lineTo(x(sx), y(sy)) : ctx.moveTo(x(sx), y(sy))));
    ctx.stroke();
    for (const [sx, sy] of line) ctx.fillRect(x(sx) - 2, y(sy) - 2, 4, 4);
  });
}
