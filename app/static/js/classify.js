// Classification of typed sentences, and of a digit drawn on the canvas or uploaded (a
// DigitPad turns the drawing into the small gray image the model takes).

import { postJSON } from "./api.js";
import { DigitPad } from "./digitpad.js";
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

let pad = null; // the DigitPad, made by setupDrawing()

function imageSizeFor(model) {
  return imageSizes[model] || [8, 8];
}

export function setupDrawing() {
  // the preview shows what the picked classifier would be sent
  const size = () => imageSizeFor($("#classify-image-model").value);
  pad = new DigitPad($("#digit-canvas"), $("#digit-preview"), size);
}

export function clearDigit() {
  pad.clear();
  $("#digit-file").value = "";
  $("#classify-image-result").replaceChildren();
}

export async function loadDigitFile(input) {
  const file = input.files[0];
  if (file) await pad.load(file);
}

// A classifier of another size answers 422 invalid_image_size with the size it takes:
// remember it and send the drawing again, once.
export async function classifyDigit(form) {
  const model = form.elements.model.value;
  const target = $("#classify-image-result");
  for (let attempt = 0; attempt < 2; attempt++) {
    const png = pad.pixels();
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
