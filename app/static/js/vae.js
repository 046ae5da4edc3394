// The VAE panel: two digits (drawn or uploaded) are encoded by the picked VAE; Interpolate
// shows the strip decoded along the latent line between them (one PNG from the server, shown
// through a blob: URL), Reconstruct the model's redrawing of each with its negative ELBO, the
// anomaly score.

import { api, postJSON } from "./api.js";
import { DigitPad } from "./digitpad.js";
import { $, formValues, h, numbers, showError } from "./dom.js";
import { modelOf } from "./models.js";

const imageSizes = {}; // VAE name -> [height, width] it takes, learnt from its 400
const pads = [];

const sizeFor = (model) => imageSizes[model] || [28, 28];

export function setupVAE() {
  const size = () => sizeFor($("#vae-model").value);
  for (const side of ["a", "b"]) {
    pads.push(new DigitPad($(`#vae-canvas-${side}`), $(`#vae-preview-${side}`), size));
  }
}

export function clearVAE() {
  for (const pad of pads) pad.clear();
  for (const side of ["a", "b"]) $(`#vae-file-${side}`).value = "";
  clearStrip();
  $("#vae-result").replaceChildren();
}

export async function loadVAEFile(index, input) {
  const file = input.files[0];
  if (file) await pads[index].load(file);
}

function clearStrip() {
  const img = $("#vae-strip");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.removeAttribute("src");
  delete img.dataset.model;
  img.alt = "";
  img.hidden = true;
  $("#vae-caption").replaceChildren();
}

// A conditional VAE decodes the class picked here (default: the first digit's); an
// unconditional one takes none, so the field goes.
export function followVAEModel() {
  const picker = $("#vae-model");
  const model = modelOf(picker);
  const labels = (model && model.labels) || [];
  const select = $("#vae-label");
  const chosen = select.value;
  select.replaceChildren(
    h("option", { value: "", text: "first digit's" }),
    ...labels.map((name, i) => h("option", { value: i, text: name })),
  );
  select.value = chosen && Number(chosen) < labels.length ? chosen : "";
  select.disabled = labels.length === 0;
  select.closest("label").hidden = labels.length === 0;
  // what is shown under the form is always about the model picked in it
  const picked = picker.value;
  if ($("#vae-strip").dataset.model !== picked) clearStrip();
  const result = $("#vae-result");
  if (result.dataset.model !== picked) result.replaceChildren();
}

// Sends the drawings (with `all` both, else those drawn) with `send`; a VAE of another size
// answers 400 invalid_image_size with the size it takes: remember it and send again, once.
async function withDigits(model, all, send) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const pngs = pads.map((pad) => pad.pixels());
    const images = all ? pngs : pngs.filter(Boolean);
    if (!images.length || images.some((png) => !png)) {
      throw new Error(all ? "Draw or upload two digits first." : "Draw or upload a digit first.");
    }
    try {
      return await send(images);
    } catch (error) {
      const expected = error.details && error.details.expected;
      if (error.code !== "invalid_image_size" || !expected || attempt) throw error;
      imageSizes[model] = [expected.height, expected.width];
    }
  }
  return undefined;
}

export async function interpolate(form) {
  const v = formValues(form);
  const body = { model: v.model, ...numbers(v, ["steps", "label"]) };
  clearStrip();
  const caption = $("#vae-caption");
  caption.textContent = `Interpolating with ${body.model}…`;
  const response = await withDigits(body.model, true, (images) =>
    api("/images/interpolate", {
      json: { ...body, images },
      headers: { Accept: "image/png" },
    }),
  );
  const img = $("#vae-strip");
  img.src = URL.createObjectURL(await response.blob());
  const picked = form.elements.label;
  let label = "";
  if (!picked.disabled) {
    label = picked.value ? `, label ${picked.selectedOptions[0].text}` : ", the first digit's label";
  }
  img.alt = `${body.steps} images decoded by ${body.model} from the first digit to the second`;
  img.alt += label;
  img.dataset.model = body.model;
  img.hidden = false;
  caption.textContent = img.alt;
}

export async function reconstruct() {
  const model = $("#vae-model").value;
  const target = $("#vae-result");
  target.dataset.model = model;
  target.replaceChildren(h("p", { class: "hint", text: `Reconstructing with ${model}…` }));
  try {
    const result = await withDigits(model, false, (images) =>
      postJSON("/images/reconstruct", { model, images }),
    );
    target.replaceChildren(
      ...result.images.map((image, i) => {
        const label = image.label === null ? "" : `, as a ${image.label}`;
        const text = `negative ELBO ${image.neg_elbo.toFixed(1)} nats${label}`;
        return h(
          "figure",
          { class: "reconstruction", "data-score": image.neg_elbo },
          h("img", {
            src: `data:image/png;base64,${image.png_base64}`,
            alt: `Reconstruction of digit ${i + 1} by ${model}`,
          }),
          h("figcaption", { class: "hint", text }),
        );
      }),
    );
  } catch (error) {
    showError(target, error);
  }
}
