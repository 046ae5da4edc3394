// A digit pad: a canvas to draw a digit on (mouse, pen or finger) or to upload a picture into,
// and a preview of the small gray image a model is sent, cropped to the ink and centred.
// Used by the Classify and VAE panels.

export class DigitPad {
  // canvas: where the digit is drawn; preview: a canvas showing what the model would get;
  // size(): the model's [height, width]; called for each preview, so it follows the model.
  constructor(canvas, preview, size) {
    this.canvas = canvas;
    this.preview = preview;
    this.size = size;
    // Read back on every stroke and request: ask for a CPU-side canvas.
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.listen();
    this.clear();
  }

  clear() {
    this.ctx.fillStyle = "#000";
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.preview.getContext("2d").clearRect(0, 0, this.preview.width, this.preview.height);
  }

  // Pointer events: one code path for the mouse, a pen and a finger.
  listen() {
    const el = this.canvas;
    const ctx = this.ctx;
    let drawing = false;
    const point = (e) => {
      const rect = el.getBoundingClientRect();
      const x = ((e.clientX - rect.left) * el.width) / rect.width;
      return [x, ((e.clientY - rect.top) * el.height) / rect.height];
    };
    el.addEventListener("pointerdown", (e) => {
      drawing = true;
      el.setPointerCapture(e.pointerId);
      const pen = { strokeStyle: "#fff", lineWidth: 16, lineCap: "round", lineJoin: "round" };
      Object.assign(ctx, pen);
      ctx.beginPath();
      ctx.moveTo(...point(e));
    });
    el.addEventListener("pointermove", (e) => {
      if (!drawing) return;
      ctx.lineTo(...point(e));
      ctx.stroke();
    });
    const stop = () => {
      if (drawing) this.showPreview();
      drawing = false;
    };
    el.addEventListener("pointerup", stop);
    el.addEventListener("pointercancel", stop);
  }

  // An uploaded picture goes onto the canvas as bright ink on dark, whatever it was.
  async load(file) {
    const bitmap = await createImageBitmap(file);
    const el = this.canvas;
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
    this.clear();
    const [left, top] = [Math.floor((el.width - w) / 2), Math.floor((el.height - h2) / 2)];
    this.ctx.putImageData(image, left, top);
    this.showPreview();
  }

  showPreview() {
    this.pixels();
  }

  // The drawing cropped to its ink, centred in a square and box-averaged down to the model's
  // size (sklearn digits fill their 8x8 frame; MNIST digits sit in 20x20 of 28x28), shown in
  // the preview; a base64 PNG of it, or null when nothing is drawn.
  pixels() {
    const [height, width] = this.size();
    const el = this.canvas;
    const gray = grayscale(this.ctx.getImageData(0, 0, el.width, el.height).data);
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
    const preview = this.preview;
    [preview.width, preview.height] = [width, height];
    const ctx = preview.getContext("2d");
    const image = ctx.createImageData(width, height);
    paintGray(image, pixels, (p) => Math.round((255 * p) / peak));
    ctx.putImageData(image, 0, 0);
    return preview.toDataURL("image/png").split(",")[1];
  }
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
