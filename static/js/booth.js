// The photobooth page: photo (camera or file), style, count, and the live gallery.
//
// The gallery is drawn from task objects only: first the API's (GET /api/tasks), then the
// same objects moved forward by events (applyEvent). A tile is keyed by task id and job index,
// so replays after a reconnect or a reload update tiles and never add them twice.

import {
  EventFeed, api, applyEvent, clientAppIdFor, fetchTasks, jobFinished, local, perTab,
  readConfig, readJson, taskFinished, writeJson,
} from "./photobooth-client.js";
import {
  $, $$, announce, bindConnection, clearNotice, cooldown, createUploader, formatEta, h,
  notify, notifyError, setUpViewer,
} from "./ui.js";

const config = readConfig();
const clientAppId = clientAppIdFor("web", config.sessionId);
const feed = new EventFeed({ clientAppId, heartbeatSeconds: config.heartbeatSeconds });
const META_KEY = `photobooth:meta:${clientAppId}`; // what the API does not echo (style, source)
const UPLOAD_KEY = `photobooth:upload:${clientAppId}`;
const PREFS_KEY = "photobooth:prefs";
const OVERDUE_GRACE_SECONDS = 15; // queued this long past the ETA: say the service is busy
const STATUS_WORDS = { pending: "Waiting", initiating: "Starting", running: "Rendering",
                       completed: "Ready", failed: "Failed", cancelled: "Cancelled" };

const state = {
  upload: null, // the API's upload object of the chosen photo
  batch: null, // the current generation task
  enhancements: new Map(), // taskId -> enhancement task, newest first
  unroute: new Map(), // taskId -> stop routing its events here
  ignored: new Set(), // tasks seen in events that are not shown (older ones)
  lookups: new Set(),
  newestCreatedAt: null,
  meta: readJson(local, META_KEY, {}),
};

const gallery = $("#gallery");
const enhancementsList = $("#enhancements");
const form = $("#generate-form");
const generateButton = $("#generate");
const countInput = $("#count");
const cancelButton = $("#cancel-batch");
const summary = $("#batch-summary");

// --- task metadata the API does not return ------------------------------------------------

function remember(taskId, fields) {
  state.meta[taskId] = { ...(state.meta[taskId] ?? {}), ...fields, at: Date.now() };
  const entries = Object.entries(state.meta).sort((a, b) => b[1].at - a[1].at).slice(0, 60);
  state.meta = Object.fromEntries(entries);
  writeJson(local, META_KEY, state.meta);
}

// --- tiles ------------------------------------------------------------------------------------

function makeTile(key, { kind }) {
  const image = h("img", { class: "tile-image", alt: "", hidden: true });
  const tile = h(
    "li",
    { class: "tile", "data-key": key, "data-kind": kind },
    h(
      "figure",
      {},
      h("div", { class: "tile-media" }, image,
        h("div", { class: "tile-overlay" },
          h("p", { class: "tile-state" }),
          h("progress", { max: "1", value: "0", hidden: true }))),
      h("figcaption", {}, h("span", { class: "tile-label" }), h("span", { class: "tile-badge" })),
      h("div", { class: "tile-actions" },
        h("button", { type: "button", class: "button button-small", "data-action": "view", hidden: true, text: "View" }),
        h("a", { class: "button button-small", "data-action": "download", hidden: true, text: "Download" }),
        kind === "generation"
          ? h("button", { type: "button", class: "button button-small", "data-action": "enhance", hidden: true, text: "Enhance" })
          : h("button", { type: "button", class: "button button-small button-danger", "data-action": "cancel", hidden: true, text: "Cancel" })),
    ),
  );
  return tile;
}

function tileFor(list, key, kind) {
  let tile = list.querySelector(`[data-key="${CSS.escape(key)}"]`);
  if (!tile) {
    tile = makeTile(key, { kind });
    list.append(tile);
  }
  return tile;
}

function stateText(task, job) {
  if (task.status === "queued") {
    const parts = ["In queue"];
    if (task.queuePosition) parts.push(`#${task.queuePosition}`);
    const eta = etaSeconds(task);
    if (eta !== null) parts.push(formatEta(eta));
    return parts.join(" · ");
  }
  switch (job.status) {
    case "pending": return task.status === "running" ? "Waiting for a free renderer…" : "Waiting…";
    case "initiating": return "Starting…";
    case "running": return `Rendering ${Math.round((job.progress ?? 0) * 100)}%`;
    case "completed": return "Ready";
    case "failed": return `Failed: ${sentence(job.error?.message) || "this image could not be made"}.`;
    case "cancelled": return task.cancelReason === "replaced" ? "Replaced by a newer batch" : "Cancelled";
    default: return job.status;
  }
}

function renderTile(tile, task, job, { label, downloadName }) {
  const status = task.status === "queued" && job.status === "pending" ? "queued" : job.status;
  tile.dataset.status = status;
  tile.dataset.taskId = task.taskId;
  tile.dataset.jobIndex = String(job.index);
  $(".tile-label", tile).textContent = label;
  $(".tile-badge", tile).textContent = status === "queued" ? "In queue" : STATUS_WORDS[job.status] ?? "";
  $(".tile-state", tile).textContent = stateText(task, job);
  const bar = $("progress", tile);
  bar.hidden = !(job.status === "running" || job.status === "initiating");
  bar.value = job.progress ?? 0;
  bar.setAttribute("aria-label", `${label} progress`);

  const image = $(".tile-image", tile);
  const result = job.status === "completed" ? job.result : null;
  const src = result?.url ?? (jobFinished(job) ? null : job.previewUrl) ?? null;
  if (src) {
    if (image.getAttribute("src") !== src) image.src = src;
    image.hidden = false;
    image.classList.toggle("is-preview", !result);
    image.alt = result ? `${label}, finished` : `${label}, preview while rendering`;
  } else {
    image.hidden = true;
    image.removeAttribute("src");
  }

  const view = $('[data-action="view"]', tile);
  const download = $('[data-action="download"]', tile);
  view.hidden = download.hidden = !result;
  if (result) {
    for (const node of [view, image]) {
      node.dataset.viewerSrc = result.url;
      node.dataset.viewerAlt = `${label}, full size`;
      node.dataset.viewerCaption = `${label} · ${result.width} × ${result.height} px`;
      node.dataset.viewerDownload = downloadName;
    }
    view.setAttribute("aria-label", `View ${label.toLowerCase()} full size`);
    download.href = result.url;
    download.setAttribute("download", downloadName);
    download.setAttribute("aria-label", `Download ${label.toLowerCase()}`);
  } else {
    delete image.dataset.viewerSrc;
  }
  const enhance = $('[data-action="enhance"]', tile);
  if (enhance) {
    enhance.hidden = !result;
    enhance.dataset.jobId = job.jobId;
    enhance.setAttribute("aria-label", `Enhance ${label.toLowerCase()}`);
  }
  const cancel = $('[data-action="cancel"]', tile);
  if (cancel) {
    cancel.hidden = taskFinished(task);
    cancel.setAttribute("aria-label", `Cancel ${label.toLowerCase()}`);
  }
}

function etaSeconds(task) {
  if (task.etaAt) return Math.max(0, (task.etaAt - Date.now()) / 1000);
  return task.etaSeconds ?? null;
}

function overdue(task) {
  return task.status === "queued" && task.etaAt && Date.now() > task.etaAt + OVERDUE_GRACE_SECONDS * 1000;
}

// --- the batch ----------------------------------------------------------------------------

function batchLabelOf(task) {
  return `photobooth-${state.meta[task.taskId]?.style ?? "image"}-${task.taskId.slice(0, 8)}`;
}

function renderBatch() {
  const task = state.batch;
  $("#gallery-empty").hidden = Boolean(task);
  cancelButton.hidden = !task || taskFinished(task);
  $("#replace-hint").hidden = !task || taskFinished(task);
  if (!task) {
    gallery.replaceChildren();
    summary.textContent = "";
    return;
  }
  // Tiles of another (replaced) batch go; this batch's tiles are created once and updated.
  for (const tile of $$(".tile", gallery)) {
    if (tile.dataset.key.split(":")[0] !== task.taskId) tile.remove();
  }
  const stem = batchLabelOf(task);
  for (const job of [...task.jobs].sort((a, b) => a.index - b.index)) {
    const tile = tileFor(gallery, `${task.taskId}:${job.index}`, "generation");
    const extension = (job.result?.contentType ?? "image/png").split("/")[1].replace("jpeg", "jpg");
    renderTile(tile, task, job, { label: `Image ${job.index + 1}`, downloadName: `${stem}-${job.index + 1}.${extension}` });
  }
  renderSummary(task);
}

function sentence(text) {
  const trimmed = (text ?? "").trim().replace(/[.!]+$/, "");
  return trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
}

function allReady(total) {
  if (total === 1) return "your image is ready";
  if (total === 2) return "both images are ready";
  return `all ${total} images are ready`;
}

function renderSummary(task) {
  const total = task.jobs.length;
  const done = task.jobs.filter((j) => j.status === "completed").length;
  const failed = task.jobs.filter((j) => j.status === "failed").length;
  const style = state.meta[task.taskId]?.styleName;
  let text;
  let tone = "";
  switch (task.status) {
    case "queued": {
      const eta = formatEta(etaSeconds(task));
      text = `In queue${task.queuePosition ? `, position ${task.queuePosition}` : ""}${eta ? `, starts in ${eta}` : ""}`;
      if (overdue(task)) {
        tone = "warning";
        text = "Still waiting: the image service is busy or slowed down right now. Your batch starts as soon as it can";
      }
      break;
    }
    case "running":
      text = `Rendering: ${done} of ${total} ready${failed ? `, ${failed} failed` : ""}`;
      break;
    case "completed":
      tone = failed ? "warning" : "success";
      text = failed ? `Done: ${done} of ${total} ready, ${failed} failed` : `Done: ${allReady(total)}`;
      break;
    case "failed":
      tone = "error";
      text = `This batch failed: ${sentence(task.error?.message) || "the image service could not make it"}`;
      break;
    case "cancelled":
      text = task.cancelReason === "replaced"
        ? `Replaced by a newer batch (${done} of ${total} finished)`
        : `Cancelled: ${done} of ${total} finished`;
      break;
    default:
      text = "";
  }
  summary.textContent = text ? `${style ? `${style} · ` : ""}${text}.` : "";
  summary.dataset.tone = tone;
}

function jobStatuses(task) {
  return task.jobs.map((j) => j.status);
}

/** Announce what an event changed, in words (never every progress tick). */
function announceChange(task, before, kind) {
  const after = jobStatuses(task);
  if (kind === "generation") {
    task.jobs.forEach((job, i) => {
      if (before.jobs[i] === after[i]) return;
      if (job.status === "completed" && task.jobs.length > 1) announce(`Image ${job.index + 1} of ${task.jobs.length} is ready.`);
      if (job.status === "failed" && task.status !== "failed") announce(`Image ${job.index + 1} failed.`);
    });
  }
  if (before.status === task.status) return;
  const name = kind === "generation" ? "Your batch" : "The enhancement";
  if (task.status === "completed") announce(`${name} is done.`);
  if (task.status === "failed") {
    announce(`${name} failed.`);
    notify({ key: `failed-${task.taskId}`, kind: "error", title: `${name} failed`,
             text: task.error?.message ?? "The image service could not make it. Try again." });
  }
  if (task.status === "cancelled" && task.cancelReason !== "replaced") announce(`${name} was cancelled.`);
}

function track(task, kind) {
  state.unroute.get(task.taskId)?.();
  const stop = feed.route(task.taskId, (event) => {
    const current = kind === "generation" ? state.batch : state.enhancements.get(task.taskId);
    if (!current || current.taskId !== event.taskId) return;
    const before = { status: current.status, jobs: jobStatuses(current) };
    applyEvent(current, event);
    announceChange(current, before, kind);
    if (kind === "generation") renderBatch();
    else renderEnhancements();
  });
  state.unroute.set(task.taskId, stop);
}

function untrack(taskId) {
  state.unroute.get(taskId)?.();
  state.unroute.delete(taskId);
  state.ignored.add(taskId);
}

function noteCreated(task) {
  if (!state.newestCreatedAt || task.createdAt > state.newestCreatedAt) state.newestCreatedAt = task.createdAt;
}

function setBatch(task) {
  if (task && state.batch?.taskId === task.taskId) {
    Object.assign(state.batch, task); // fresher state of the same task (after a reset)
  } else {
    if (state.batch) untrack(state.batch.taskId);
    state.batch = task;
    if (task) {
      if (task.etaSeconds && !task.etaAt) task.etaAt = Date.now() + task.etaSeconds * 1000;
      track(task, "generation");
    }
  }
  renderBatch();
}

// --- enhancements -------------------------------------------------------------------------

function putEnhancement(task) {
  const known = state.enhancements.get(task.taskId);
  if (known) Object.assign(known, task);
  else {
    state.enhancements.set(task.taskId, task);
    track(task, "enhancement");
  }
  renderEnhancements();
}

function renderEnhancements() {
  const tasks = [...state.enhancements.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
  $("#enhancements-block").hidden = tasks.length === 0;
  tasks.forEach((task, position) => {
    const source = state.meta[task.taskId]?.sourceLabel;
    const label = source ? `Enhanced ${source}` : "Enhanced image";
    const job = task.jobs[0];
    if (!job) return;
    const tile = tileFor(enhancementsList, `${task.taskId}:0`, "enhancement");
    renderTile(tile, task, job, { label, downloadName: `enhanced-${task.taskId.slice(0, 8)}.png` });
    if (enhancementsList.children[position] !== tile) enhancementsList.insertBefore(tile, enhancementsList.children[position] ?? null);
  });
}

async function enhance(button) {
  const jobId = button.dataset.jobId;
  const tile = button.closest(".tile");
  const index = Number(tile.dataset.jobIndex);
  let rateLimited = null;
  button.disabled = true;
  button.textContent = "Starting…";
  try {
    // One enhancement per image: a second click (or a retried request) gets the same task,
    // unless the earlier one failed or was cancelled, which a new click tries again.
    const earlier = [...state.enhancements.values()].find((t) => state.meta[t.taskId]?.sourceJobId === jobId);
    const again = earlier && (earlier.status === "failed" || earlier.status === "cancelled");
    const task = await api("/api/tasks", {
      method: "POST",
      json: { clientAppId, kind: "enhancement", sourceJobId: jobId },
      headers: { "Idempotency-Key": again ? `enhance-${jobId}-${Date.now()}` : `enhance-${jobId}` },
    });
    const known = state.enhancements.has(task.taskId);
    remember(task.taskId, { sourceJobId: jobId, sourceLabel: `image ${index + 1}` });
    noteCreated(task);
    putEnhancement(task);
    clearNotice("enhance");
    const target = enhancementsList.querySelector(`[data-key="${CSS.escape(`${task.taskId}:0`)}"]`);
    target?.classList.add("highlight");
    setTimeout(() => target?.classList.remove("highlight"), 1500);
    announce(known ? `Image ${index + 1} is already enhanced; see Enhanced images.`
                   : `Enhancing image ${index + 1}. It appears under Enhanced images; your batch keeps going.`);
  } catch (error) {
    rateLimited = notifyError("enhance", error).retryAfter;
    if (error.status !== 429) rateLimited = null;
  } finally {
    button.disabled = false;
    button.textContent = "Enhance";
    if (rateLimited) cooldown(button, rateLimited);
  }
}

async function cancelTask(task, button) {
  if (!task || taskFinished(task)) return;
  button.disabled = true;
  try {
    const outcome = await api(`/api/tasks/${task.taskId}/cancel`, { method: "POST" });
    if (outcome.status === "cancelled") {
      const before = { status: task.status, jobs: jobStatuses(task) };
      applyEvent(task, { type: "cancelled", reason: "user" });
      announceChange(task, before, task.kind);
    }
    renderBatch();
    renderEnhancements();
  } catch (error) {
    notifyError("cancel", error);
  } finally {
    button.disabled = false;
  }
}

// --- state from the API, then events --------------------------------------------------------

async function loadSnapshot() {
  const tasks = await fetchTasks(clientAppId, 30);
  const batch = tasks.find((t) => t.kind === "generation") ?? null;
  if (batch) setBatch(batch);
  for (const task of tasks.filter((t) => t.kind === "enhancement").slice(0, 12)) putEnhancement(task);
  if (tasks[0]) noteCreated(tasks[0]);
  state.loaded = true;
}

// Events of tasks this page does not show yet: a newer task (made in another tab of this
// browser) is adopted, an older one is ignored.
feed.onUnrouted((event) => {
  const id = event.taskId;
  if (!id || state.ignored.has(id) || state.lookups.has(id)) return;
  state.lookups.add(id);
  setTimeout(async () => {
    try {
      if (state.unroute.has(id)) return; // the creating request answered meanwhile
      const task = await api(`/api/tasks/${id}`);
      if (state.newestCreatedAt && task.createdAt <= state.newestCreatedAt) {
        state.ignored.add(id);
        return;
      }
      noteCreated(task);
      if (task.kind === "generation") setBatch(task);
      else if (task.kind === "enhancement") putEnhancement(task);
      else state.ignored.add(id);
    } catch {
      state.ignored.add(id);
    } finally {
      state.lookups.delete(id);
    }
  }, 400);
});

feed.onReset(async () => {
  await loadSnapshot();
});

// --- the form -------------------------------------------------------------------------------

const uploader = createUploader($("#photo-uploader"), {
  maxBytes: config.uploadMaxBytes,
  noticeKey: "upload",
  onUploaded: ({ upload, previewUrl }) => {
    state.upload = upload;
    clearNotice("generate");
    keepUploadForReload(upload, previewUrl);
  },
  onCleared: () => {
    state.upload = null;
    perTab.removeItem(UPLOAD_KEY);
  },
});

/** Keep the upload and a small preview in this tab, so a reload keeps "photo ready". */
function keepUploadForReload(upload, previewUrl) {
  writeJson(perTab, UPLOAD_KEY, { upload, preview: null });
  const image = new Image();
  image.onload = () => {
    const scale = Math.min(1, 480 / Math.max(image.naturalWidth, image.naturalHeight));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(image.naturalWidth * scale);
    canvas.height = Math.round(image.naturalHeight * scale);
    canvas.getContext("2d").drawImage(image, 0, 0, canvas.width, canvas.height);
    writeJson(perTab, UPLOAD_KEY, { upload, preview: canvas.toDataURL("image/jpeg", 0.8) });
  };
  image.src = previewUrl;
}

function restoreUpload() {
  const kept = readJson(perTab, UPLOAD_KEY, null);
  if (!kept?.upload) return;
  state.upload = kept.upload;
  uploader.restore({ upload: kept.upload, previewUrl: kept.preview });
}

function restorePrefs() {
  const prefs = readJson(local, PREFS_KEY, {});
  if (prefs.style) {
    const radio = form.querySelector(`input[name="style"][value="${CSS.escape(prefs.style)}"]`);
    if (radio) radio.checked = true;
  }
  if (prefs.count) countInput.value = String(prefs.count);
}

function readCount() {
  const value = Number(countInput.value);
  const max = Number(countInput.max);
  return Number.isInteger(value) && value >= 1 && value <= max ? value : null;
}

for (const button of $$(".stepper button")) {
  button.addEventListener("click", () => {
    const next = (readCount() ?? 1) + Number(button.dataset.step);
    countInput.value = String(Math.min(Number(countInput.max), Math.max(1, next)));
    countInput.dispatchEvent(new Event("change"));
  });
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearNotice("generate");
  if (!state.upload) {
    notify({ key: "generate", kind: "error", title: "Add a photo first", text: "Take one with the camera or choose a file." });
    $("#camera-start").focus();
    return;
  }
  const count = readCount();
  if (count === null) {
    notify({ key: "generate", kind: "error", title: "Choose how many images", text: `Pick a number from 1 to ${countInput.max}.` });
    countInput.setAttribute("aria-invalid", "true");
    countInput.focus();
    return;
  }
  countInput.removeAttribute("aria-invalid");
  const styleInput = form.querySelector('input[name="style"]:checked');
  const style = styleInput.value;
  const styleName = styleInput.closest("label").querySelector(".choice-name").textContent;
  writeJson(local, PREFS_KEY, { style, count });
  const replacing = state.batch && !taskFinished(state.batch);
  generateButton.disabled = true;
  generateButton.textContent = "Starting…";
  let rateLimited = null;
  try {
    const task = await api("/api/tasks", {
      method: "POST",
      json: { clientAppId, kind: "generation", uploadId: state.upload.uploadId, style, numberImages: count },
      headers: { "Idempotency-Key": crypto.randomUUID() }, // a retried request never makes two
    });
    remember(task.taskId, { style, styleName });
    noteCreated(task);
    setBatch(task);
    announce(`Started ${count} image${count === 1 ? "" : "s"} in ${styleName}.${replacing ? " The unfinished batch was cancelled." : ""}`);
    if (window.matchMedia("(max-width: 959px)").matches) $("#gallery-title").scrollIntoView({ behavior: "smooth" });
  } catch (error) {
    if (error.code === "upload_not_found") uploader.clear();
    const described = notifyError("generate", error);
    if (error.status === 429) rateLimited = described.retryAfter;
  } finally {
    generateButton.disabled = false;
    generateButton.textContent = "Generate";
    if (rateLimited) cooldown(generateButton, rateLimited);
  }
});

cancelButton.addEventListener("click", () => cancelTask(state.batch, cancelButton));

document.addEventListener("click", (e) => {
  const button = e.target.closest("button[data-action]");
  if (!button) return;
  if (button.dataset.action === "enhance") enhance(button);
  if (button.dataset.action === "cancel") {
    const taskId = button.closest(".tile").dataset.taskId;
    cancelTask(state.enhancements.get(taskId), button);
  }
});

// --- the camera -------------------------------------------------------------------------------

const video = $("#camera");
let stream = null;

const CAMERA_ERRORS = {
  NotAllowedError: "Camera access was not allowed. Allow it in the browser, or choose a file instead.",
  NotFoundError: "No camera was found. Choose a file instead.",
  NotReadableError: "The camera is in use by another app. Close it, or choose a file instead.",
  OverconstrainedError: "The camera cannot take photos here. Choose a file instead.",
};

function showCamera(on) {
  video.hidden = !on;
  $("#photo-uploader").classList.toggle("camera-on", on);
  $("#camera-start").hidden = on;
  $("#camera-capture").hidden = !on;
  $("#camera-stop").hidden = !on;
}

function stopCamera() {
  for (const track of stream?.getTracks() ?? []) track.stop();
  stream = null;
  video.srcObject = null;
  showCamera(false);
}

$("#camera-start").addEventListener("click", async () => {
  clearNotice("camera");
  if (!navigator.mediaDevices?.getUserMedia) {
    notify({ key: "camera", kind: "error", title: "No camera here",
             text: "This browser can only use a camera on HTTPS or localhost. Choose a file instead." });
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: "user", width: { ideal: 1280 }, height: { ideal: 960 } },
      audio: false,
    });
  } catch (error) {
    notify({ key: "camera", kind: "error", title: "The camera did not start",
             text: CAMERA_ERRORS[error.name] ?? "Choose a file instead." });
    return;
  }
  video.srcObject = stream;
  showCamera(true);
  await video.play().catch(() => {});
  $("#camera-capture").focus();
  announce("Camera on. Press Take photo when ready.");
});

$("#camera-stop").addEventListener("click", () => {
  stopCamera();
  $("#camera-start").focus();
});

$("#camera-capture").addEventListener("click", () => {
  if (!video.videoWidth) return;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => {
    stopCamera();
    $("#camera-start").focus();
    if (blob) uploader.take(new File([blob], "camera.jpg", { type: "image/jpeg" }), { source: "camera" });
  }, "image/jpeg", 0.92);
});

// --- start ------------------------------------------------------------------------------------

setUpViewer();
bindConnection(feed);
restorePrefs();
restoreUpload();
setInterval(() => {
  // Queue ETAs count down between events.
  if (state.batch?.status === "queued") renderBatch();
  if ([...state.enhancements.values()].some((t) => t.status === "queued")) renderEnhancements();
}, 1000);

(async () => {
  const saved = feed.savedCursor();
  try {
    await loadSnapshot();
  } catch (error) {
    notifyError("load", error, [{ label: "Reload", onClick: () => location.reload() }]);
  }
  // Any cursor from before the snapshot works: replayed events change nothing it shows.
  feed.start(saved ?? config.headCursor);
  feed.onStatus(async (status) => {
    if (status.state === "live" && !state.loaded) {
      try {
        await loadSnapshot();
        clearNotice("load");
      } catch { /* the next reconnect tries again */ }
    }
  });
  document.body.dataset.ready = "true";
})();
