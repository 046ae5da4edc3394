// Classification of typed sentences, and of a digit drawn on the canvas or uploaded. The
// drawing is turned into the small gray image the model takes, which the preview shows.

import { postJSON } from "./api.js";
import { $, h, showError } from "./dom.js";

const imageSizes = {}; // classifier name -> [height, width] it takes, learnt from its 422

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

export async function classifyText(form) {
  const inputs = form.elements.inputs.value.split("\n").map((s) => s.trim()).filter(Boolean);
  const target = $("#classify-text-result");
  if (!inputs.length) return showError(target, "Type a sentence first.");
  const body = { model: form.elements.model.value, inputs, top_k: 3 };
  renderResults(target, (await postJSON("/classify", body)).results, inputs);
}

// ---- the digit canvas -----------------------------------------------------------------------

const canvas = () => $("#digit-canvas");
// Read back on every stroke and classification: ask for a CPU-side canvas.
const drawing2d = () => canvas().getContext("2d", { willReadFrequently: true });

function clearCanvas() {
  const ctx = drawing2d();
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas().width, canvas().height);
  const preview = $("#digit-preview");
  preview.getContext("2d").clearRect(0, 0, preview.width, preview.height);
}

export function clearDigit() {
  clearCanvas();
  $("#digit-file").value = "";
  $("#classify-image-result").replaceChildren();
}

// Pointer events: one code path for the mouse, a pen and a finger.
export function setupDrawing() {
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
    if (drawing) showPreview();
    drawing = false;
  };
  el.addEventListener("pointerup", stop);
  el.addEventListener("pointercancel", stop);
  clearCanvas();
}

// An uploaded picture goes onto the canvas as bright ink on dark, whatever it was.
export async function loadDigitFile(input) {
  const file = input.files[0];
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
  const invert = borderMean(gray, w, h2) > 127; // light paper: dark ink, so flip it
  paintGray(image, gray, (g) => (invert ? 255 - g : g));
  clearCanvas();
  const [left, top] = [Math.floor((el.width - w) / 2), Math.floor((el.height - h2) / 2)];
  drawing2d().putImageData(image, left, top);
  showPreview();
}

function grayscale(rgba) {
  const gray = new Float32Array(rgba.length / 4);
  for (let i = 0; i < gray.length; i++) {
    gray[i] = (rgba[4 * i] + rgba[4 * i + 1] + rgba[4 * i + 2]) / 3;
  }
  return gray;
}

// Writes one opaque gray pixel per value into `image`, at the level `level(value)` gives.
function paintGray(image, values, level) {
  values.forEach((value, i) => {
    const v = level(value);
    image.data.set([v, v, v, 255], i * 4);
  });
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
  return imageSizes[model] || [8, 8];
}

// The preview shows what the picked classifier would be sent.
function showPreview() {
  modelPixels(imageSizeFor($("#classify-image-model").value));
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
  paintGray(image, pixels, (p) => Math.round((255 * p) / peak));
  ctx.putImageData(image, 0, 0);
  return preview.toDataURL("image/png").split(",")[1];
}

// A classifier of another size answers 422 invalid_image_size with the size it takes:
// remember it and send the drawing again, once.
export async function classifyDigit(form) {
  const model = form.elements.model.value;
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
      imageSizes[model] = [expected.height, expected.width];
    }
  }
}
