// Shared page pieces: notices and announcements, the connection indicator, the full-size
// viewer, the upload picker and small formatters. DOM only; the API lives in
// photobooth-client.js.

import { describeError, uploadImage } from "./photobooth-client.js";

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

/** Create an element: h("p", {class: "x", text: "hi"}, child...). */
export function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

// --- announcements and notices ----------------------------------------------------------------

/** Tell screen-reader users something that happened without moving focus. */
export function announce(text) {
  const region = $("#announcer");
  if (!region) return;
  // Clearing first makes the same sentence announced twice in a row.
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

const noticeTimers = new Map();

/**
 * Show a notice in #notices, replacing the one with the same key.
 * kind: "error" | "warning" | "info" | "success". Errors are alerts (announced at once).
 */
export function notify({ key, kind = "info", title, text = "", actions = [], timeoutMs = 0 }) {
  const region = $("#notices");
  if (!region) return null;
  clearNotice(key);
  const notice = h(
    "div",
    { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status", "data-key": key },
    h("div", { class: "notice-body" }, h("strong", { text: title }), text ? h("span", { text }) : null),
    h(
      "div",
      { class: "notice-actions" },
      ...actions.map((a) => h("button", { type: "button", class: "button button-small", onclick: a.onClick, text: a.label })),
      h("button", {
        type: "button",
        class: "notice-close",
        "aria-label": `Dismiss: ${title}`,
        onclick: () => clearNotice(key),
        text: "×",
      }),
    ),
  );
  region.prepend(notice);
  if (timeoutMs) noticeTimers.set(key, setTimeout(() => clearNotice(key), timeoutMs));
  return notice;
}

export function clearNotice(key) {
  clearTimeout(noticeTimers.get(key));
  noticeTimers.delete(key);
  for (const node of $$(`#notices [data-key="${CSS.escape(key)}"]`)) node.remove();
}

/** Show an API error as a notice; return its description. */
export function notifyError(key, error, actions = []) {
  const described = describeError(error);
  notify({ key, kind: "error", title: described.title, text: described.text, actions });
  return described;
}

/** Disable a button for `seconds` (after a 429), counting down in its label. */
export function cooldown(button, seconds) {
  const label = button.dataset.label ?? button.textContent;
  button.dataset.label = label;
  button.disabled = true;
  let left = Math.max(1, Math.ceil(seconds));
  const tick = () => {
    if (left <= 0) {
      button.disabled = false;
      button.textContent = label;
      return;
    }
    button.textContent = `${label} (${left} s)`;
    left -= 1;
    setTimeout(tick, 1000);
  };
  tick();
}

// --- the connection indicator -----------------------------------------------------------------

const STATUS_TEXT = {
  connecting: "Connecting…",
  live: { ws: "Live", sse: "Live (SSE)", poll: "Live (polling)" },
  reconnecting: "Reconnecting…",
  offline: "Offline",
  failed: "Disconnected",
};

/** Show a feed's state in the header pill, with a notice while the connection is lost. */
export function bindConnection(feed) {
  const pill = $("#connection-status");
  let lostAt = null;
  let lostNoticeShown = false;
  let lostTimer = null;
  feed.onStatus((status) => {
    if (pill) {
      const text = STATUS_TEXT[status.state];
      pill.dataset.state = status.state;
      pill.dataset.transport = status.transport;
      $(".status-text", pill).textContent = typeof text === "string" ? text : text[status.transport];
    }
    if (status.state === "live") {
      clearTimeout(lostTimer);
      lostAt = null;
      if (lostNoticeShown) {
        lostNoticeShown = false;
        clearNotice("connection");
        notify({ key: "connection", kind: "success", title: "Back online", text: "Everything is up to date again.", timeoutMs: 4000 });
        announce("Connection restored.");
      }
      return;
    }
    if (status.state === "failed") {
      notify({
        key: "connection",
        kind: "error",
        title: "Your session has ended",
        text: "Reload the page to start a new one.",
        actions: [{ label: "Reload", onClick: () => location.reload() }],
      });
      return;
    }
    if (status.state === "connecting") return;
    // Reconnecting or offline: say so only when it lasts, a blip needs no alarm.
    if (lostAt === null) {
      lostAt = Date.now();
      lostTimer = setTimeout(() => {
        lostNoticeShown = true;
        notify({
          key: "connection",
          kind: "warning",
          title: navigator.onLine ? "Connection lost" : "You are offline",
          text: "Reconnecting automatically. Your images keep rendering meanwhile.",
        });
      }, 2000);
    }
  });
}

// --- the full-size viewer ---------------------------------------------------------------------

let viewerReturnFocus = null;

/** Open the full-size viewer dialog for an image. */
export function openViewer({ src, alt, caption, downloadName }) {
  const dialog = $("#viewer");
  if (!dialog) return window.open(src, "_blank", "noopener");
  viewerReturnFocus = document.activeElement;
  const image = $("img", dialog);
  image.src = src;
  image.alt = alt;
  $(".viewer-caption", dialog).textContent = caption ?? "";
  const download = $(".viewer-download", dialog);
  download.href = src;
  download.setAttribute("download", downloadName ?? "");
  $(".viewer-open", dialog).href = src;
  dialog.showModal();
  $(".viewer-close", dialog).focus();
}

export function setUpViewer() {
  const dialog = $("#viewer");
  if (!dialog) return;
  $(".viewer-close", dialog).addEventListener("click", () => dialog.close());
  // A click on the backdrop (the dialog itself, not its content) closes it.
  dialog.addEventListener("click", (e) => e.target === dialog && dialog.close());
  dialog.addEventListener("close", () => {
    $("img", dialog).removeAttribute("src");
    viewerReturnFocus?.focus?.();
  });
  document.addEventListener("click", (e) => {
    const trigger = e.target.closest("[data-viewer-src]");
    if (!trigger) return;
    e.preventDefault();
    openViewer({
      src: trigger.dataset.viewerSrc,
      alt: trigger.dataset.viewerAlt ?? "",
      caption: trigger.dataset.viewerCaption,
      downloadName: trigger.dataset.viewerDownload,
    });
  });
}

// --- formatting -------------------------------------------------------------------------------

export function formatEta(seconds) {
  if (seconds === null || seconds === undefined) return null;
  if (seconds <= 1) return "any moment now";
  if (seconds < 60) return `about ${Math.round(seconds)} s`;
  return `about ${Math.round(seconds / 60)} min`;
}

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/** Show server-rendered <time datetime> values in the reader's own time zone. */
export function localizeTimes(root = document) {
  const format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  for (const node of $$("time[datetime]", root)) {
    const date = new Date(node.getAttribute("datetime"));
    if (!Number.isNaN(date.getTime())) node.textContent = format.format(date);
  }
}

// --- the upload picker ------------------------------------------------------------------------

const ACCEPTED = ["image/jpeg", "image/png", "image/webp"];

/**
 * Wire an upload picker: a file input, a drop zone and a preview inside `root`.
 * The file is uploaded as soon as it is chosen, so problems show before "Generate".
 * Calls onUploaded({upload, previewUrl, file}) and onCleared().
 */
export function createUploader(root, { maxBytes, noticeKey, onUploaded, onCleared }) {
  const input = $("input[type=file]", root);
  const zone = $(".dropzone", root);
  const state = $(".upload-state", root);
  const preview = $(".upload-preview", root);
  let busy = false;

  const setState = (kind, text) => {
    state.dataset.kind = kind;
    state.textContent = text;
  };

  async function take(file, { source = "file" } = {}) {
    if (!file || busy) return;
    clearNotice(noticeKey);
    // Checked here too so a 40 MB photo is refused before it is sent.
    if (maxBytes && file.size > maxBytes) {
      const error = { status: 413, code: "file_too_large" };
      setState("error", "Not uploaded: the file is over 15 MB.");
      notifyError(noticeKey, error);
      return;
    }
    if (file.size === 0) {
      setState("error", "Not uploaded: the file is empty.");
      notifyError(noticeKey, { status: 400, code: "empty_upload" });
      return;
    }
    busy = true;
    root.setAttribute("aria-busy", "true");
    const localUrl = URL.createObjectURL(file);
    setState("busy", "Uploading…");
    try {
      const upload = await uploadImage(file, {
        onProgress: (p) => setState("busy", `Uploading… ${Math.round(p * 100)}%`),
      });
      preview.src = localUrl;
      preview.hidden = false;
      root.classList.add("has-preview");
      setState("ok", `Ready: ${upload.width} × ${upload.height} px, ${formatBytes(upload.size)}`);
      announce(source === "camera" ? "Photo taken and uploaded." : "Image uploaded.");
      onUploaded?.({ upload, previewUrl: localUrl, file });
    } catch (error) {
      URL.revokeObjectURL(localUrl);
      const described = notifyError(noticeKey, error);
      setState("error", `Not uploaded: ${described.title.toLowerCase()}.`);
    } finally {
      busy = false;
      root.removeAttribute("aria-busy");
    }
  }

  input.addEventListener("change", () => {
    take(input.files?.[0]);
    input.value = ""; // choosing the same file again still fires change
  });
  if (zone) {
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (e) => {
        e.preventDefault();
        zone.classList.add("dragging");
      });
    }
    for (const type of ["dragleave", "drop"]) {
      zone.addEventListener(type, () => zone.classList.remove("dragging"));
    }
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      take(e.dataTransfer?.files?.[0]);
    });
  }

  return {
    take,
    restore({ upload, previewUrl }) {
      if (previewUrl) {
        preview.src = previewUrl;
        preview.hidden = false;
        root.classList.add("has-preview");
      }
      setState("ok", `Ready: ${upload.width} × ${upload.height} px, ${formatBytes(upload.size)}`);
    },
    clear() {
      preview.hidden = true;
      preview.removeAttribute("src");
      root.classList.remove("has-preview");
      setState("idle", "No image yet.");
      onCleared?.();
    },
    accepted: ACCEPTED,
  };
}
