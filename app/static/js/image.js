// Image generation: one PNG grid from the server, shown through a blob: URL (allowed by the
// CSP's img-src) that is revoked when the next grid replaces it. The form offers only what the
// chosen model takes: a label for class-conditional models, truncation for those drawing a
// latent vector (GAN, VAE), DDIM steps and guidance for diffusion models. A diffusion model's
// answer streams (`stream: true`): about ten previews as it denoises, each drawn as a grid.

import { api, sseEvents } from "./api.js";
import { $, formValues, h, numbers } from "./dom.js";
import { activeVersion, modelOf } from "./models.js";

const DIFFUSION = "image-diffusion"; // its noise is the image itself: truncation would not apply

// Shows a field (and sends it) only when it applies to the model.
function offer(name, applies) {
  const field = $(`#image-form [name=${name}]`);
  field.disabled = !applies;
  field.closest("label").hidden = !applies;
}

function clearGrid() {
  const img = $("#image-output");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.removeAttribute("src");
  img.alt = "";
  img.hidden = true;
  delete img.dataset.model;
  delete img.dataset.previews;
  const caption = $("#image-caption");
  caption.replaceChildren();
  delete caption.dataset.model;
}

// The picked model decides the controls; a grid (or an error) of another model goes, so that
// what is shown under the form is always about the model picked in it.
export function followImageModel() {
  const select = $("#image-model");
  const model = modelOf(select);
  const labels = (model && model.labels) || [];
  const version = activeVersion(model);
  const diffusion = Boolean(version && version.kind === DIFFUSION);
  const label = $("#image-label");
  const chosen = label.value;
  label.replaceChildren(
    h("option", { value: "", text: "any" }),
    ...labels.map((name, i) => h("option", { value: i, text: name })),
  );
  label.value = chosen && Number(chosen) < labels.length ? chosen : "";
  offer("label", labels.length > 0);
  offer("truncation", !diffusion);
  offer("steps", diffusion);
  offer("guidance", diffusion && labels.length > 0);
  const img = $("#image-output");
  const caption = $("#image-caption");
  const shownFor = img.hidden ? caption.dataset.model : img.dataset.model;
  if (shownFor && shownFor !== select.value) clearGrid();
}

// Shows `blob` (a PNG) as the grid, freeing the one it replaces.
function showGrid(blob, model) {
  const img = $("#image-output");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  img.dataset.model = model;
  img.hidden = false;
}

// Base64 PNGs (one per image) drawn as one grid, as the server draws its PNG grids.
async function gridOf(pngs) {
  const images = await Promise.all(
    pngs.map((png) => {
      const image = new Image();
      image.src = `data:image/png;base64,${png}`;
      return image.decode().then(() => image);
    }),
  );
  const cols = Math.ceil(Math.sqrt(images.length));
  const { width, height } = images[0];
  const canvas = document.createElement("canvas");
  canvas.width = cols * width;
  canvas.height = Math.ceil(images.length / cols) * height;
  const context = canvas.getContext("2d");
  images.forEach((image, i) => {
    context.drawImage(image, (i % cols) * width, Math.floor(i / cols) * height);
  });
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

// A diffusion model's images, shown as they denoise; the final images' body.
async function streamDiffusion(body, caption) {
  const steps = body.steps ?? 50; // the server's default
  const preview_every = Math.max(1, Math.round(steps / 10));
  const json = { ...body, stream: true, preview_every };
  const response = await api("/generate/image", { json, headers: { Accept: "text/event-stream" } });
  let previews = 0;
  for await (const { event, data } of sseEvents(response)) {
    const message = JSON.parse(data);
    if (event === "error") throw new Error(message.error.message);
    if (event === "done") return message;
    showGrid(await gridOf(message.images), body.model);
    $("#image-output").dataset.previews = String(++previews);
    caption.textContent = `Denoising with ${body.model}: step ${message.step} of ${message.steps}…`;
  }
  throw new Error("the stream ended before its images");
}

export async function generateImage(form) {
  const v = formValues(form);
  const body = {
    model: v.model,
    n: Number(v.n),
    ...numbers(v, ["seed", "label", "truncation", "steps", "guidance"]),
  };
  clearGrid(); // an old grid above this request's error would look like its result
  const caption = $("#image-caption");
  caption.dataset.model = body.model; // the error that may land here is this model's
  caption.textContent = `Generating ${body.n} images with ${body.model}…`;
  if (form.elements.steps.disabled) {
    const response = await api("/generate/image", { json: body, headers: { Accept: "image/png" } });
    showGrid(await response.blob(), body.model);
  } else {
    const done = await streamDiffusion(body, caption);
    showGrid(await gridOf(done.images.map((i) => i.png_base64)), body.model);
  }
  const img = $("#image-output");
  const labelName = form.elements.label.selectedOptions[0]?.text;
  const what = form.elements.label.disabled ? "unconditional" : `label ${labelName}`;
  img.alt = `${body.n} images generated by ${body.model}, ${what}, seed ${body.seed ?? "random"}`;
  caption.textContent = img.alt;
}
