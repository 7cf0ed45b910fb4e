// The mockup page: design upload, product and variants from /api/products, progress, and on
// the task's `redirect` event the result page.

import {
  EventFeed, api, applyEvent, clientAppIdFor, fetchTasks, local, perTab, readConfig, readJson,
  taskFinished, writeJson,
} from "./photobooth-client.js";
import {
  $, $$, announce, bindConnection, clearNotice, cooldown, createUploader, formatEta, h, notify,
  notifyError, setUpViewer,
} from "./ui.js";

const config = readConfig();
// Its own client id: a new photobooth batch replaces only batches, never these mockups.
const clientAppId = clientAppIdFor("mockups", config.sessionId);
const feed = new EventFeed({ clientAppId, heartbeatSeconds: config.heartbeatSeconds });
const ACTIVE_KEY = `photobooth:mockup-active:${clientAppId}`; // the task this tab waits for
const PREFS_KEY = "photobooth:mockup-prefs";
const UPLOAD_KEY = `photobooth:upload:${clientAppId}`;
const OVERDUE_GRACE_SECONDS = 15;
const STATUS_LABELS = { queued: "In queue", running: "Rendering", completed: "Ready",
                        failed: "Failed", cancelled: "Cancelled" };
const ICONS = {
  "t-shirt": "M8 3 3 6l2 4 2-1v11h10V9l2 1 2-4-5-3a3 3 0 0 1-8 0z",
  hoodie: "M8 3 3 7l2 4 2-1v10h10V10l2 1 2-4-5-4c0 2-1.5 4-4 4s-4-2-4-4z",
  mug: "M4 6h12v12a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2zm12 3h2a2 2 0 0 1 2 2v2a2 2 0 0 1-2 2h-2",
  "tote-bag": "M5 8h14l-1 13H6zm4 0V6a3 3 0 0 1 6 0v2",
  poster: "M6 3h12v18H6zm2 13 3-4 2 3 2-2 2 3",
};

const state = {
  products: [],
  product: null,
  upload: null,
  active: null, // the task this tab waits for
  tasks: new Map(), // recent mockup tasks by id
  newestCreatedAt: null,
  ignored: new Set(),
};

const form = $("#mockup-form");
const submitButton = $("#create-mockups");

// --- products, variants, placements -------------------------------------------------------

function icon(type) {
  const path = ICONS[type] ?? ICONS.poster;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "product-icon");
  svg.setAttribute("aria-hidden", "true");
  svg.innerHTML = `<path d="${path}" fill="none" stroke="currentColor" stroke-width="1.5" stroke-linejoin="round"/>`;
  return svg;
}

async function loadProducts() {
  const box = $("#products");
  box.replaceChildren(h("p", { class: "hint", text: "Loading products…" }));
  try {
    state.products = await api("/api/products");
    clearNotice("products");
  } catch (error) {
    const described = notifyError("products", error, [{ label: "Try again", onClick: loadProducts }]);
    box.replaceChildren(
      h("div", { class: "load-failed" },
        h("p", { class: "hint", text: "The product list could not be loaded. It is tried again automatically." }),
        h("button", { type: "button", class: "button button-small", onclick: loadProducts, text: "Try again now" })),
    );
    setTimeout(loadProducts, Math.max(5, described.retryAfter ?? 5) * 1000);
    return;
  }
  const prefs = readJson(local, PREFS_KEY, {});
  box.replaceChildren(
    ...state.products.map((product) =>
      h("label", { class: "choice" },
        h("input", { type: "radio", name: "product", value: String(product.id),
                     onchange: () => selectProduct(product) }),
        icon(product.type),
        h("span", { class: "choice-name", text: product.name }),
        h("span", { class: "choice-description",
                    text: `${product.variants.length} variants · ${product.placements.join(", ")}` }))),
  );
  const chosen = state.products.find((p) => p.id === prefs.productId) ?? state.products[0];
  if (chosen) {
    box.querySelector(`input[value="${chosen.id}"]`).checked = true;
    selectProduct(chosen);
  }
  renderRecent();
}

function selectProduct(product) {
  state.product = product;
  const groups = new Map();
  for (const variant of product.variants) {
    if (!groups.has(variant.color)) groups.set(variant.color, []);
    groups.get(variant.color).push(variant);
  }
  $("#variants").replaceChildren(
    ...[...groups].map(([color, variants], n) =>
      h("div", { class: "variant-group", role: "group", "aria-labelledby": `color-${n}` },
        h("p", { class: "variant-group-name", id: `color-${n}`, text: color }),
        h("div", { class: "variant-sizes" },
          ...variants.map((variant, i) =>
            h("label", { class: "chip" },
              h("input", { type: "checkbox", name: "variant", value: String(variant.id),
                           checked: n === 0 && i === 0, "aria-label": variant.name,
                           onchange: countVariants }),
              h("span", { "aria-hidden": "true", text: variant.size || variant.name })))))),
  );
  $("#placements").replaceChildren(
    ...product.placements.map((placement, i) =>
      h("label", { class: "chip" },
        h("input", { type: "radio", name: "placement", value: placement, checked: i === 0 }),
        h("span", { text: placement.charAt(0).toUpperCase() + placement.slice(1) }))),
  );
  countVariants();
}

function checkedVariants() {
  return $$('#variants input[name="variant"]:checked').map((input) => Number(input.value));
}

function countVariants() {
  const total = state.product?.variants.length ?? 0;
  $("#variant-count").textContent = `${checkedVariants().length} of ${total} selected`;
}

$("#variants-all").addEventListener("click", () => {
  for (const input of $$('#variants input[name="variant"]')) input.checked = true;
  countVariants();
});
$("#variants-none").addEventListener("click", () => {
  for (const input of $$('#variants input[name="variant"]')) input.checked = false;
  countVariants();
});

// --- the active task and the recent ones ----------------------------------------------------

// The task object does not name its product, so this browser remembers it per task.
const META_KEY = `photobooth:meta:${clientAppId}`;
const meta = readJson(local, META_KEY, {});

function remember(taskId, fields) {
  meta[taskId] = { ...fields, at: Date.now() };
  const newest = Object.entries(meta).sort((a, b) => b[1].at - a[1].at).slice(0, 60);
  writeJson(local, META_KEY, Object.fromEntries(newest));
}

function productName(task) {
  const productId = meta[task.taskId]?.productId;
  return state.products.find((p) => p.id === productId)?.name ?? "Mockups";
}

function renderActive() {
  const task = state.active;
  $("#mockup-status").hidden = !task;
  $("#mockup-idle").hidden = Boolean(task);
  if (!task) return;
  const total = task.jobs.length;
  const done = task.jobs.filter((j) => j.status === "completed").length;
  const failed = task.jobs.filter((j) => j.status === "failed").length;
  const line = $("#mockup-status-line");
  const detail = $("#mockup-status-detail");
  const progress = $("#mockup-progress");
  line.dataset.tone = "";
  const partial = task.jobs.reduce((sum, j) => sum + (j.status === "completed" ? 1 : j.progress ?? 0), 0);
  progress.value = total ? partial / total : 0;
  progress.hidden = taskFinished(task) && task.status !== "completed";
  $("#mockup-cancel").hidden = taskFinished(task);
  const open = $("#mockup-open");
  open.hidden = task.status !== "completed";
  open.href = `/mockups/${task.taskId}/`;
  switch (task.status) {
    case "queued": {
      const eta = task.etaAt ? Math.max(0, (task.etaAt - Date.now()) / 1000) : task.etaSeconds;
      line.textContent = `In queue${task.queuePosition ? `, position ${task.queuePosition}` : ""}.`;
      detail.textContent = eta !== null && eta !== undefined ? `Starts in ${formatEta(eta)}.` : "";
      if (task.etaAt && Date.now() > task.etaAt + OVERDUE_GRACE_SECONDS * 1000) {
        line.dataset.tone = "warning";
        detail.textContent = "The mockup service is busy or slowed down right now; yours start as soon as it can.";
      }
      break;
    }
    case "running":
      line.textContent = `Rendering: ${done} of ${total} mockup${total === 1 ? "" : "s"} done.`;
      detail.textContent = failed ? `${failed} could not be made.` : "You are taken to the results when they are ready.";
      break;
    case "completed":
      line.textContent = "Done! Opening your mockups…";
      detail.textContent = "";
      break;
    case "failed":
      line.dataset.tone = "error";
      line.textContent = "These mockups failed.";
      detail.textContent = task.error?.message ?? "The mockup service could not make them. Try again.";
      break;
    case "cancelled":
      line.textContent = "Cancelled.";
      detail.textContent = "";
      break;
  }
}

function renderRecent() {
  const list = $("#recent");
  const tasks = [...state.tasks.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1)).slice(0, 8);
  $("#recent-empty").hidden = tasks.length > 0;
  list.replaceChildren(
    ...tasks.map((task) =>
      h("li", { "data-task-id": task.taskId },
        h("span", {},
          h("strong", { text: productName(task) }),
          " ",
          h("span", { class: "hint", text: `${task.jobs.length} variant${task.jobs.length === 1 ? "" : "s"}` })),
        h("span", { class: "badge", "data-status": task.status, text: STATUS_LABELS[task.status] ?? task.status }),
        h("a", { class: "button button-small", href: `/mockups/${task.taskId}/`,
                 "aria-label": `Open ${productName(task)} mockups`, text: "Open" }))),
  );
}

function track(task) {
  state.tasks.set(task.taskId, task);
  if (task.etaSeconds && !task.etaAt) task.etaAt = Date.now() + task.etaSeconds * 1000;
  feed.route(task.taskId, (event) => {
    const current = state.tasks.get(task.taskId);
    const before = current.status;
    applyEvent(current, event);
    const isActive = state.active?.taskId === current.taskId;
    if (isActive && event.type === "redirect") {
      // Forget it first: coming Back from the result page must not redirect again.
      perTab.removeItem(ACTIVE_KEY);
      announce("Your mockups are ready. Opening them.");
      location.assign(event.url);
      return;
    }
    if (isActive && before !== current.status && current.status === "failed") {
      notify({ key: "mockup-failed", kind: "error", title: "These mockups failed",
               text: current.error?.message ?? "The mockup service could not make them. Try again." });
    }
    if (isActive) renderActive();
    renderRecent();
  });
}

feed.onUnrouted(async (event) => {
  const id = event.taskId;
  if (!id || state.ignored.has(id) || state.tasks.has(id)) return;
  state.ignored.add(id); // looked up once
  try {
    const task = await api(`/api/tasks/${id}`);
    if (task.kind === "mockup" && (!state.newestCreatedAt || task.createdAt > state.newestCreatedAt)) {
      track(task);
      renderRecent();
    }
  } catch {
    // Gone or not ours: nothing to show.
  }
});

async function loadSnapshot() {
  const tasks = (await fetchTasks(clientAppId, 20)).filter((t) => t.kind === "mockup");
  for (const task of tasks) {
    const known = state.tasks.get(task.taskId);
    if (known) Object.assign(known, task);
    else track(task);
  }
  if (tasks[0] && (!state.newestCreatedAt || tasks[0].createdAt > state.newestCreatedAt)) state.newestCreatedAt = tasks[0].createdAt;
  const activeId = perTab.getItem(ACTIVE_KEY);
  const active = activeId ? state.tasks.get(activeId) : null;
  if (active && active.status === "completed") {
    // It finished while this page was away: offer it, without taking the reader anywhere.
    perTab.removeItem(ACTIVE_KEY);
    notify({ key: "mockup-ready", kind: "success", title: "Your last mockups are ready",
             actions: [{ label: "View them", onClick: () => location.assign(`/mockups/${active.taskId}/`) }] });
    state.active = null;
  } else {
    state.active = active ?? null;
  }
  renderActive();
  renderRecent();
}

feed.onReset(async () => loadSnapshot());

// --- the form -------------------------------------------------------------------------------

const uploader = createUploader($("#design-uploader"), {
  maxBytes: config.uploadMaxBytes,
  noticeKey: "upload",
  onUploaded: ({ upload }) => {
    state.upload = upload;
    writeJson(perTab, UPLOAD_KEY, { upload });
    clearNotice("mockup");
  },
  onCleared: () => {
    state.upload = null;
    perTab.removeItem(UPLOAD_KEY);
  },
});

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearNotice("mockup");
  if (!state.upload) {
    notify({ key: "mockup", kind: "error", title: "Add a design first", text: "Choose an image file with your design." });
    $("#design-file").focus();
    return;
  }
  if (!state.product) {
    notify({ key: "mockup", kind: "error", title: "Products are not loaded yet", text: "Wait a moment and try again." });
    return;
  }
  const variantIds = checkedVariants();
  if (variantIds.length === 0) {
    notify({ key: "mockup", kind: "error", title: "Choose at least one variant", text: "Pick the colours and sizes to show." });
    $('#variants input[name="variant"]')?.focus();
    return;
  }
  const placement = form.querySelector('input[name="placement"]:checked')?.value;
  writeJson(local, PREFS_KEY, { productId: state.product.id });
  submitButton.disabled = true;
  submitButton.textContent = "Starting…";
  let rateLimited = null;
  try {
    const task = await api("/api/tasks", {
      method: "POST",
      json: { clientAppId, kind: "mockup", uploadId: state.upload.uploadId, productId: state.product.id,
              variantIds, placement },
      headers: { "Idempotency-Key": crypto.randomUUID() },
    });
    remember(task.taskId, { productId: state.product.id });
    perTab.setItem(ACTIVE_KEY, task.taskId);
    state.active = task;
    if (!state.newestCreatedAt || task.createdAt > state.newestCreatedAt) state.newestCreatedAt = task.createdAt;
    track(task);
    renderActive();
    renderRecent();
    announce(`Making ${variantIds.length} mockup${variantIds.length === 1 ? "" : "s"} of ${state.product.name}.`);
    $("#progress-title").scrollIntoView({ behavior: "smooth", block: "nearest" });
  } catch (error) {
    if (error.code === "upload_not_found") uploader.clear();
    const described = notifyError("mockup", error);
    if (error.status === 429) rateLimited = described.retryAfter;
  } finally {
    submitButton.disabled = false;
    submitButton.textContent = "Create mockups";
    if (rateLimited) cooldown(submitButton, rateLimited);
  }
});

$("#mockup-cancel").addEventListener("click", async () => {
  const task = state.active;
  if (!task || taskFinished(task)) return;
  try {
    const outcome = await api(`/api/tasks/${task.taskId}/cancel`, { method: "POST" });
    if (outcome.status === "cancelled") applyEvent(task, { type: "cancelled", reason: "user" });
    perTab.removeItem(ACTIVE_KEY);
    renderActive();
    renderRecent();
    announce("Mockups cancelled.");
  } catch (error) {
    notifyError("mockup", error);
  }
});

// --- start ------------------------------------------------------------------------------------

setUpViewer();
bindConnection(feed);
const kept = readJson(perTab, UPLOAD_KEY, null);
if (kept?.upload) {
  state.upload = kept.upload;
  uploader.restore({ upload: kept.upload, previewUrl: null });
}
setInterval(() => state.active?.status === "queued" && renderActive(), 1000);

(async () => {
  const saved = feed.savedCursor();
  await loadProducts();
  try {
    await loadSnapshot();
  } catch (error) {
    notifyError("load", error, [{ label: "Reload", onClick: () => location.reload() }]);
  }
  feed.start(saved ?? config.headCursor);
  document.body.dataset.ready = "true";
})();
