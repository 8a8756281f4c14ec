// huabu playground: a plain ES module with no dependencies and no build step. It uses only the
// gateway's public API, like any other client: POST /v1/jobs, the job's WebSocket for live
// progress (polling GET /v1/jobs/{id} if the socket is refused), and GET /v1/models.

// Browsers cannot set headers on a WebSocket, so the key travels as an offered subprotocol
// ("huabu.key.<key>", which the gateway accepts and echoes) instead of a query string that logs keep.
const WS_KEY_PROTOCOL = "huabu.key.";
const EDIT_VIEW_PX = 256; // the edit canvas's longest side on screen
const POLL_MS = 300;

const $ = (id) => document.getElementById(id);
const state = { busy: false, selected: null, wsEvents: 0, sequence: 0 };

class PlaygroundError extends Error {}

// --- talking to the gateway ---------------------------------------------------------------

function apiKey() {
  return $("api-key").value.trim();
}

function apiUrl(path) {
  return new URL(path, document.baseURI); // the server sets <base href> to the app's route prefix
}

function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: authHeaders(body ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(apiUrl(path), init);
  } catch (error) {
    throw new PlaygroundError(`cannot reach the server: ${error.message}`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null; // not JSON: the status line below says what happened
  }
  if (!response.ok) {
    throw new PlaygroundError(data?.error?.message ?? `${response.status} ${response.statusText}`);
  }
  return data;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function jobPath(jobId, suffix = "") {
  return `v1/jobs/${encodeURIComponent(jobId)}${suffix}`;
}

// Resolves with the job's ImagesResponse; rejects with the job's error message.
function followJob(jobId) {
  return new Promise((resolve, reject) => {
    const url = apiUrl(jobPath(jobId, "/ws"));
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const key = apiKey();
    let settled = false;
    const settle = (fn, value) => {
      if (!settled) {
        settled = true;
        fn(value);
      }
    };
    const ws = key ? new WebSocket(url, [WS_KEY_PROTOCOL + key]) : new WebSocket(url);
    ws.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (!event.type && event.error) {
        settle(reject, new PlaygroundError(event.error.message)); // e.g. an unknown job id
        return;
      }
      state.wsEvents += 1;
      document.body.dataset.wsEvents = String(state.wsEvents);
      setProgress(event.step ?? 0, event.total ?? 0, event.status);
      if (event.type === "result" && event.result) settle(resolve, event.result);
      else if (event.type === "error") settle(reject, new PlaygroundError(event.error?.message ?? "the job failed"));
      else if (event.status === "canceled") settle(reject, new PlaygroundError("the job was canceled"));
    };
    // A socket that closes before the job ended (refused, proxy without WebSocket): poll instead.
    ws.onclose = () => {
      if (!settled) pollJob(jobId).then((r) => settle(resolve, r), (e) => settle(reject, e));
    };
  });
}

async function pollJob(jobId) {
  for (;;) {
    const job = await api(jobPath(jobId));
    setProgress(job.progress?.step ?? 0, job.progress?.total ?? 0, job.status);
    if (job.status === "succeeded") return job.result;
    if (job.status === "failed") throw new PlaygroundError(job.error?.message ?? "the job failed");
    if (job.status === "canceled") throw new PlaygroundError("the job was canceled");
    await sleep(POLL_MS);
  }
}

// --- page state ---------------------------------------------------------------------------

function setStatus(message, kind = "info") {
  const status = $("status");
  status.textContent = message;
  status.className = kind;
}

function setProgress(step, total, status) {
  const bar = $("progress");
  bar.max = total || 1;
  // A cache hit succeeds without denoising steps: show it as complete.
  bar.value = status === "succeeded" && !total ? 1 : Math.min(step, total || 1);
  bar.dataset.step = String(step);
  bar.dataset.total = String(total);
  $("progress-text").textContent = total ? `${status} · step ${step}/${total}` : status;
}

function setBusy(busy) {
  state.busy = busy;
  $("generate").disabled = busy;
  $("inpaint").disabled = busy || !state.selected;
  $("outpaint").disabled = busy || !state.selected;
  document.body.dataset.busy = busy ? "true" : "false";
}

function commonFields(prompt) {
  const body = { prompt, steps: Number($("steps").value), cache: $("cache").value };
  const seed = $("seed").value.trim();
  if (seed !== "") body.seed = Number(seed);
  const model = $("model").value;
  if (model) body.model = model;
  const negative = $("negative-prompt").value.trim();
  if (negative) body.negative_prompt = negative;
  return body;
}

async function run(kind, body) {
  if (state.busy) return;
  setBusy(true);
  setStatus(`${kind}: submitting…`);
  setProgress(0, body.steps ?? 0, "queued");
  try {
    const job = await api("v1/jobs", { method: "POST", body: { kind, ...body } });
    $("result-job").textContent = job.id;
    const response = await followJob(job.id);
    const image = response.data[0];
    const item = await addResult({ kind, prompt: body.prompt, jobId: job.id, image });
    showResult(item);
    const note = image.prompt_truncated ? " (prompt truncated to the model's limit)" : "";
    setStatus(`${kind} done${image.cached ? " from cache" : ""}${note}`, "ok");
  } catch (error) {
    setStatus(error.message, "error");
  } finally {
    setBusy(false);
  }
}

function decodeSize(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve({ width: img.naturalWidth, height: img.naturalHeight, img });
    img.onerror = () => reject(new PlaygroundError("the server returned an image the browser cannot decode"));
    img.src = src;
  });
}

async function addResult({ kind, prompt, jobId, image }) {
  const src = `data:image/png;base64,${image.b64_json}`;
  const { width, height, img } = await decodeSize(src);
  state.sequence += 1;
  const item = { n: state.sequence, kind, prompt, jobId, b64: image.b64_json, src, width, height, img, data: image };
  const li = document.createElement("li");
  li.className = "gallery-item";
  li.dataset.n = String(item.n);
  li.dataset.kind = kind;
  li.dataset.cached = image.cached ? "yes" : "no";
  li.dataset.variant = image.variant ?? "";
  const figure = document.createElement("figure");
  const thumb = document.createElement("img");
  thumb.src = src;
  thumb.alt = prompt;
  thumb.title = `${prompt}\nclick to edit`;
  const caption = document.createElement("figcaption");
  const cached = image.cached ? "cached" : "new";
  caption.textContent = `#${item.n} ${kind} · ${width}×${height} · seed ${image.seed ?? "?"} · ${image.variant ?? "?"} · ${cached}`;
  figure.append(thumb, caption);
  li.append(figure);
  li.addEventListener("click", () => select(item));
  $("gallery").prepend(li);
  return item;
}

function showResult(item) {
  const image = item.data;
  const view = $("result-image");
  view.src = item.src;
  view.hidden = false;
  $("result-cached").textContent = image.cached ? "yes" : "no";
  $("result-variant").textContent = image.variant ?? "–";
  $("result-model").textContent = image.model ?? "–";
  $("result-seed").textContent = image.seed ?? "–";
  $("result-size").textContent = `${item.width}×${item.height}`;
  $("result-job").textContent = item.jobId;
  const link = $("result-download");
  link.href = item.src;
  link.download = `huabu-${item.n}.png`;
  link.hidden = false;
  select(item);
}

// --- inpainting: a brush-painted mask over the selected image -------------------------------

const brush = { drawing: false, last: null, painted: false };

function editScale(item) {
  return Math.max(1, Math.floor(EDIT_VIEW_PX / Math.max(item.width, item.height)));
}

function select(item) {
  state.selected = item;
  for (const li of $("gallery").children) li.classList.toggle("selected", li.dataset.n === String(item.n));
  const scale = editScale(item);
  const image = $("edit-canvas");
  const mask = $("mask-canvas");
  image.width = item.width;
  image.height = item.height;
  mask.width = item.width * scale;
  mask.height = item.height * scale;
  for (const canvas of [image, mask]) {
    canvas.style.width = `${item.width * scale}px`;
    canvas.style.height = `${item.height * scale}px`;
  }
  $("canvas-stack").style.width = `${item.width * scale}px`;
  $("canvas-stack").style.height = `${item.height * scale}px`;
  image.getContext("2d").drawImage(item.img, 0, 0);
  clearMask();
  $("edit-hint").textContent = `Editing #${item.n} (${item.width}×${item.height}). Paint the area to repaint.`;
  if (!$("inpaint-prompt").value) $("inpaint-prompt").value = item.prompt;
  if (!$("outpaint-prompt").value) $("outpaint-prompt").value = item.prompt;
  setBusy(state.busy);
}

function clearMask() {
  const mask = $("mask-canvas");
  mask.getContext("2d").clearRect(0, 0, mask.width, mask.height);
  brush.painted = false;
  mask.dataset.painted = "false";
}

function canvasPoint(event) {
  const canvas = $("mask-canvas");
  const rect = canvas.getBoundingClientRect();
  return {
    x: ((event.clientX - rect.left) * canvas.width) / rect.width,
    y: ((event.clientY - rect.top) * canvas.height) / rect.height,
  };
}

function paint(to) {
  if (!state.selected) return;
  const canvas = $("mask-canvas");
  const ctx = canvas.getContext("2d");
  const radius = (Number($("brush-size").value) * editScale(state.selected)) / 2;
  ctx.fillStyle = ctx.strokeStyle = "#ff3860";
  ctx.lineCap = "round";
  ctx.lineWidth = radius * 2;
  ctx.beginPath();
  const from = brush.last ?? to;
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x, to.y);
  ctx.stroke();
  ctx.beginPath();
  ctx.arc(to.x, to.y, radius, 0, Math.PI * 2);
  ctx.fill();
  brush.last = to;
  brush.painted = true;
  canvas.dataset.painted = "true";
}

// The wire mask: the image's size, transparent where painted (= repaint), opaque elsewhere.
function maskPng(item) {
  const small = document.createElement("canvas");
  small.width = item.width;
  small.height = item.height;
  const ctx = small.getContext("2d");
  ctx.drawImage($("mask-canvas"), 0, 0, item.width, item.height);
  const pixels = ctx.getImageData(0, 0, item.width, item.height);
  let repaint = 0;
  for (let i = 0; i < pixels.data.length; i += 4) {
    const painted = pixels.data[i + 3] > 64;
    repaint += painted ? 1 : 0;
    pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = 0;
    pixels.data[i + 3] = painted ? 0 : 255;
  }
  ctx.putImageData(pixels, 0, 0);
  return { png: small.toDataURL("image/png"), repaint };
}

// --- outpainting by direction -------------------------------------------------------------

const SIDES = {
  left: ["left"],
  right: ["right"],
  up: ["top"],
  down: ["bottom"],
  horizontal: ["left", "right"],
  vertical: ["top", "bottom"],
  all: ["left", "right", "top", "bottom"],
};

function extents(direction, pixels) {
  const out = { left: 0, right: 0, top: 0, bottom: 0 };
  for (const side of SIDES[direction]) out[side] = pixels;
  return out;
}

// --- wiring -------------------------------------------------------------------------------

async function loadModels() {
  const select = $("model");
  try {
    const models = await api("v1/models");
    select.replaceChildren(new Option("default", ""), ...models.data.map((m) => new Option(m.id, m.id)));
    document.body.dataset.ready = "true";
  } catch (error) {
    setStatus(`could not list models: ${error.message}`, "error");
  }
}

function init() {
  const key = $("api-key");
  key.value = sessionStorage.getItem("huabu-api-key") ?? "";
  key.addEventListener("change", () => {
    sessionStorage.setItem("huabu-api-key", key.value.trim());
    loadModels();
  });

  $("generate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const prompt = $("prompt").value.trim();
    if (!prompt) return setStatus("write a prompt first", "error");
    run("generate", { ...commonFields(prompt), size: $("size").value });
  });

  $("inpaint-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const item = state.selected;
    if (!item) return setStatus("pick an image from the gallery first", "error");
    const { png, repaint } = maskPng(item);
    if (!repaint) return setStatus("paint the area to repaint on the image first", "error");
    const prompt = $("inpaint-prompt").value.trim() || item.prompt;
    run("edit", { ...commonFields(prompt), image: item.b64, mask: png });
  });

  $("outpaint-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const item = state.selected;
    if (!item) return setStatus("pick an image from the gallery first", "error");
    const pixels = Number($("outpaint-pixels").value);
    if (!Number.isInteger(pixels) || pixels < 1) return setStatus("pixels must be a positive whole number", "error");
    const prompt = $("outpaint-prompt").value.trim() || item.prompt;
    run("outpaint", { ...commonFields(prompt), image: item.b64, ...extents($("outpaint-direction").value, pixels) });
  });

  const mask = $("mask-canvas");
  mask.addEventListener("pointerdown", (event) => {
    if (!state.selected) return;
    mask.setPointerCapture(event.pointerId);
    brush.drawing = true;
    brush.last = null;
    paint(canvasPoint(event));
  });
  mask.addEventListener("pointermove", (event) => {
    if (brush.drawing) paint(canvasPoint(event));
  });
  for (const type of ["pointerup", "pointercancel"]) {
    mask.addEventListener(type, () => {
      brush.drawing = false;
      brush.last = null;
    });
  }
  $("clear-mask").addEventListener("click", clearMask);

  setBusy(false);
  loadModels();
}

init();
