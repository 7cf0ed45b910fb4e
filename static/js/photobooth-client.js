// Photobooth client: the API, the live event feed and the task model every page shares.
//
// The feed tries the WebSocket first, then Server-Sent Events when the WebSocket cannot connect,
// then long-polling /api/events as the last resort. It always resumes from its cursor (the id of
// the last event it applied), keeps that cursor in sessionStorage so a reload resumes too, and
// routes events to the tasks that registered for them. Events are applied with applyEvent(),
// which only ever moves a task forward, so a replay after a reconnect changes nothing.

const CLIENT_APP_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$/;
const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5000;
const HEALTH_TIMEOUT_MS = 3000;
const POLL_WAIT_SECONDS = 25; // the server clamps longer waits to 25 s anyway
const SEEN_MAX = 5000; // event ids remembered to drop repeats across transports
// Close codes of contract section 4: without a session reconnecting cannot help; a refusal
// (4003: e.g. a proxy that changes the Origin) sends us to the next transport at once.
const CLOSE_NO_SESSION = 4001;
const CLOSE_FORBIDDEN = 4003;
const ORPHANS_MAX = 50; // tasks whose early events wait for a route (see route())
const TOO_MANY_STREAMS = 4029;
const NO_EVENT_TYPES = new Set(["heartbeat", "pong", "ack", "error"]);

// --- small helpers --------------------------------------------------------------------------

export function readConfig() {
  const node = document.getElementById("client-config");
  return node ? JSON.parse(node.textContent) : {};
}

function storageOf(kind) {
  try {
    const storage = kind === "local" ? window.localStorage : window.sessionStorage;
    const probe = "__photobooth_probe__";
    storage.setItem(probe, "1");
    storage.removeItem(probe);
    return storage;
  } catch {
    // Private modes may refuse storage: keep things for this page only.
    const memory = new Map();
    return {
      getItem: (k) => (memory.has(k) ? memory.get(k) : null),
      setItem: (k, v) => memory.set(k, String(v)),
      removeItem: (k) => memory.delete(k),
    };
  }
}

export const local = storageOf("local");
export const perTab = storageOf("session");

export function readJson(storage, key, fallback) {
  try {
    const raw = storage.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

export function writeJson(storage, key, value) {
  try {
    storage.setItem(key, JSON.stringify(value));
  } catch {
    // A full storage only costs the resume-after-reload convenience.
  }
}

function randomToken(length) {
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => "abcdefghijklmnopqrstuvwxyz0123456789"[b % 36]).join("");
}

/** Return this browser's clientAppId for one purpose ("web", "mockups") of one booth session. */
export function clientAppIdFor(purpose, sessionId) {
  // Keyed by session: a new session (cookies cleared) must not reuse an id another one owns.
  const key = `photobooth:clientAppId:${purpose}:${sessionId}`;
  let id = local.getItem(key);
  if (!id || !CLIENT_APP_ID.test(id)) {
    id = `photobooth-${purpose}-${randomToken(12)}`;
    local.setItem(key, id);
  }
  return id;
}

function cookie(name) {
  const match = document.cookie.split("; ").find((part) => part.startsWith(`${name}=`));
  return match ? decodeURIComponent(match.slice(name.length + 1)) : null;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// --- the API ----------------------------------------------------------------------------------

/** An API error: `status` 0 means the server could not be reached. */
export class ApiError extends Error {
  constructor(status, code, message, { details = null, retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfter = retryAfter; // seconds, from Retry-After
  }
}

function errorFrom(status, text, retryAfterHeader) {
  let error = {};
  try {
    error = JSON.parse(text).error ?? {};
  } catch {
    // Not our JSON (a proxy's error page): fall back to the status.
  }
  const retryAfter = Number.parseInt(retryAfterHeader ?? "", 10);
  return new ApiError(status, error.code ?? `http_${status}`, error.message ?? `HTTP ${status}`, {
    details: error.details ?? null,
    retryAfter: Number.isFinite(retryAfter) ? retryAfter : null,
  });
}

/** Call the API with the session cookie (and the CSRF token on writes); return its JSON. */
export async function api(path, { method = "GET", json, headers = {}, signal } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, signal };
  init.credentials = "same-origin";
  if (UNSAFE.has(method)) init.headers["X-CSRFToken"] = cookie("csrftoken") ?? "";
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network_error", "The server cannot be reached.");
  }
  const text = await response.text();
  if (!response.ok) throw errorFrom(response.status, text, response.headers.get("Retry-After"));
  return text ? JSON.parse(text) : null;
}

/** Upload an image (POST /api/uploads); `onProgress` gets 0..1 while the bytes go out. */
export function uploadImage(file, { onProgress } = {}) {
  // XMLHttpRequest, not fetch: only it reports upload progress.
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/api/uploads");
    request.setRequestHeader("X-CSRFToken", cookie("csrftoken") ?? "");
    request.setRequestHeader("Accept", "application/json");
    request.upload.onprogress = (e) => e.lengthComputable && onProgress?.(e.loaded / e.total);
    request.onload = () => {
      if (request.status === 201) resolve(JSON.parse(request.responseText));
      else {
        reject(errorFrom(request.status, request.responseText, request.getResponseHeader("Retry-After")));
      }
    };
    request.onerror = () => reject(new ApiError(0, "network_error", "The server cannot be reached."));
    const form = new FormData();
    form.append("image", file, file.name || "photo.jpg");
    request.send(form);
  });
}

/** Return the client's tasks (newest first): unfinished and recent ones. */
export async function fetchTasks(clientAppId, limit = 30) {
  const query = new URLSearchParams({ clientAppId, limit: String(limit) });
  return (await api(`/api/tasks?${query}`)).results;
}

/** Return words a person can act on for an API error (title, text, retry hint). */
export function describeError(error) {
  const code = error?.code ?? "unknown";
  const wait = error?.retryAfter;
  const texts = {
    network_error: ["Can't reach Photobooth", "Check your connection. We keep trying in the background."],
    file_too_large: ["That file is too big", "Images can be at most 15 MB. Try a smaller photo."],
    image_too_large: ["That image is too large", "It has more than 40 megapixels. Try a smaller photo."],
    unsupported_media_type: ["That file isn't a supported image", "Use a JPEG, PNG or WebP image."],
    corrupt_image: ["That image can't be read", "The file looks damaged or incomplete. Try another one."],
    empty_upload: ["That file is empty", "Choose a photo that has something in it."],
    missing_image: ["No image was sent", "Choose a photo and try again."],
    upstream_unavailable: [
      "The image service is unavailable",
      "It is busy or having trouble right now. Please try again in a moment.",
    ],
    source_not_ready: ["Not ready yet", "That image isn't finished, so it can't be enhanced yet."],
    no_session: ["Your session has ended", "Reload the page to start a new one."],
    invalid_token: ["Your session has ended", "Reload the page to start a new one."],
    csrf_failed: ["Your session has ended", "Reload the page and try again."],
    client_app_forbidden: ["This page belongs to another session", "Reload the page to continue."],
    task_not_found: ["Not found", "That task no longer exists."],
    upload_not_found: ["Your photo has expired", "Upload it again, please."],
  };
  if (error?.status === 429 || code === "rate_limited") {
    const after = wait ? ` Try again in ${wait} second${wait === 1 ? "" : "s"}.` : " Try again shortly.";
    return { title: "Too many requests", text: `Photobooth is busy right now.${after}`, retryAfter: wait ?? 5 };
  }
  const known = texts[code];
  if (known) return { title: known[0], text: known[1], retryAfter: wait };
  if (error?.status === 503) return { title: texts.upstream_unavailable[0], text: texts.upstream_unavailable[1], retryAfter: wait };
  return { title: "Something went wrong", text: error?.message || "Please try again.", retryAfter: wait };
}

// --- the task model -------------------------------------------------------------------------

const TASK_RANK = { queued: 0, running: 1, completed: 2, failed: 2, cancelled: 2 };
const JOB_RANK = { pending: 0, initiating: 1, running: 2, completed: 3, failed: 3, cancelled: 3 };

export const taskFinished = (task) => TASK_RANK[task.status] === 2;
export const jobFinished = (job) => JOB_RANK[job.status] === 3;

function moveTask(task, status) {
  if (TASK_RANK[status] > TASK_RANK[task.status]) task.status = status;
}

function moveJob(job, status) {
  if (JOB_RANK[status] > JOB_RANK[job.status]) job.status = status;
}

/** Apply one event to a task object (the API's shape); only ever moves it forward. */
export function applyEvent(task, event) {
  const job = event.jobIndex === undefined ? null : task.jobs.find((j) => j.index === event.jobIndex);
  const finished = taskFinished(task);
  switch (event.type) {
    case "queued":
      if (task.status === "queued") {
        task.queuePosition = event.queuePosition;
        task.etaSeconds = event.etaSeconds;
        task.etaAt = Date.now() + (event.etaSeconds ?? 0) * 1000;
      }
      break;
    case "initiating":
    case "started":
      moveTask(task, "running");
      if (job) moveJob(job, event.type === "started" ? "running" : "initiating");
      break;
    case "progress":
      moveTask(task, "running");
      if (job && !jobFinished(job)) {
        moveJob(job, "running");
        job.progress = Math.max(job.progress ?? 0, event.progress ?? 0);
      }
      break;
    case "preview":
      if (job && !jobFinished(job)) job.previewUrl = event.previewUrl;
      break;
    case "jobCompleted":
      if (job) {
        moveJob(job, "completed");
        if (job.status === "completed") {
          job.progress = 1;
          job.result = { url: event.resultUrl, width: event.width, height: event.height,
                         contentType: event.contentType, size: event.size };
        }
      }
      break;
    case "jobFailed":
      if (job) {
        moveJob(job, "failed");
        if (job.status === "failed") job.error = { code: event.errorCode, message: event.message };
      }
      break;
    case "completed":
      moveTask(task, "completed");
      break;
    case "failed":
      moveTask(task, "failed");
      if (task.status === "failed") {
        task.error = { code: event.errorCode, message: event.message };
        for (const j of task.jobs) {
          if (!jobFinished(j)) j.error = { code: event.errorCode, message: event.message };
          moveJob(j, "failed");
        }
      }
      break;
    case "cancelled":
      moveTask(task, "cancelled");
      if (task.status === "cancelled") {
        task.cancelReason = event.reason;
        for (const j of task.jobs) moveJob(j, "cancelled");
      }
      break;
    case "redirect":
      task.redirectUrl = event.url;
      break;
    default:
      return false;
  }
  return !finished || event.type === "redirect";
}

// --- the event feed ---------------------------------------------------------------------------

/**
 * A resumable event stream of one scope (a clientAppId, or the whole session).
 *
 * feed.route(taskId, fn) sends that task's events to fn; feed.onUnrouted(fn) gets the rest.
 * feed.onReset(async fn) refetches state when the server says the cursor is unknown.
 * feed.onStatus(fn) gets {state: connecting|live|reconnecting|offline|failed, transport, retryInMs}.
 */
export class EventFeed {
  constructor({ clientAppId = null, heartbeatSeconds = 15, cursorKey = null } = {}) {
    this.clientAppId = clientAppId;
    this.cursorKey = cursorKey ?? `photobooth:cursor:${clientAppId ?? "session"}`;
    this.cursor = null;
    this.transport = "ws";
    this.staleAfterMs = heartbeatSeconds * 3 * 1000;
    this.routes = new Map();
    this.unrouted = [];
    this.statusHandlers = [];
    this.resetHandler = null;
    this.fatalHandler = null;
    this.generation = 0; // bumped per connection attempt: late callbacks of old ones are ignored
    this.attempt = 0;
    this.failures = { ws: 0, sse: 0 };
    this.seen = new Set();
    this.orphans = new Map();
    this.queue = [];
    this.draining = false;
    this.status = { state: "connecting", transport: this.transport };
    this.stopped = true;
    this.timer = null;
    window.addEventListener("online", () => this._networkBack());
    window.addEventListener("offline", () => this._setStatus({ state: "offline" }));
    window.addEventListener("pagehide", () => this.stop());
    window.addEventListener("pageshow", (e) => e.persisted && this.start(this.cursor));
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.timer && !this.stopped) this._reconnectNow();
    });
  }

  /** Send a task's events to `handler`, starting with any that came before the route. */
  route(taskId, handler) {
    this.routes.set(taskId, handler);
    // A task's first events can outrun the response that names it (POST /api/tasks).
    const early = this.orphans.get(taskId) ?? [];
    this.orphans.delete(taskId);
    for (const event of early) this._call(handler, event);
    return () => this.routes.delete(taskId);
  }

  onUnrouted(handler) { this.unrouted.push(handler); }
  onStatus(handler) { this.statusHandlers.push(handler); handler(this.status); }
  onReset(handler) { this.resetHandler = handler; }
  onFatal(handler) { this.fatalHandler = handler; }

  /** Return the cursor this tab kept from an earlier visit, if any. */
  savedCursor() { return perTab.getItem(this.cursorKey); }

  /** Start streaming after `cursor` (null: from now on). */
  start(cursor = null) {
    this.cursor = cursor;
    this.stopped = false;
    this._connect();
  }

  stop() {
    this.stopped = true;
    this.generation += 1;
    clearTimeout(this.timer);
    this.timer = null;
    this._closeTransport();
  }

  // Connection management.

  _connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = null;
    this._closeTransport();
    const generation = ++this.generation;
    this._setStatus({ state: this.everLive ? "reconnecting" : "connecting", retryInMs: 0 });
    if (this.transport === "ws") this._openWebSocket(generation);
    else if (this.transport === "sse") this._openEventSource(generation);
    else this._poll(generation);
  }

  _closeTransport() {
    clearInterval(this.watchdog);
    if (this.socket) {
      this.socket.onclose = this.socket.onmessage = this.socket.onerror = null;
      try { this.socket.close(); } catch { /* already closed */ }
      this.socket = null;
    }
    if (this.source) { this.source.close(); this.source = null; }
    if (this.pollAbort) { this.pollAbort.abort(); this.pollAbort = null; }
  }

  _scopeParams() {
    return this.clientAppId ? { clientAppId: this.clientAppId } : { scope: "session" };
  }

  _openWebSocket(generation) {
    const query = new URLSearchParams(this._scopeParams());
    if (this.cursor) query.set("cursor", this.cursor);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/progress/?${query}`);
    this.socket = socket;
    let connected = false;
    let lastHeard = Date.now();
    socket.onmessage = (message) => {
      if (generation !== this.generation) return;
      lastHeard = Date.now();
      let data;
      try { data = JSON.parse(message.data); } catch { return; }
      if (data.type === "connected") connected = true;
      this._receive(data, "ws");
    };
    socket.onclose = (e) => {
      if (generation === this.generation) this._ended("ws", connected, e.code);
    };
    // Heartbeats come every heartbeatSeconds; silence for three of them means a dead link.
    this.watchdog = setInterval(() => {
      if (generation === this.generation && Date.now() - lastHeard > this.staleAfterMs) {
        this._closeTransport();
        this._ended("ws", connected, 0);
      }
    }, 5000);
  }

  _openEventSource(generation) {
    const query = new URLSearchParams();
    let path = "/progress/session";
    if (this.clientAppId) { path = "/progress/client"; query.set("clientAppId", this.clientAppId); }
    if (this.cursor) query.set("lastEventId", this.cursor);
    const source = new EventSource(`${path}?${query}`);
    this.source = source;
    let connected = false;
    source.onmessage = (message) => {
      if (generation !== this.generation) return;
      let data;
      try { data = JSON.parse(message.data); } catch { return; }
      if (data.type === "connected") connected = true;
      this._receive(data, "sse");
    };
    // EventSource would reconnect by itself, but from our side we keep one policy for all
    // transports: close, back off, resume from the cursor we applied.
    source.onerror = () => {
      if (generation !== this.generation) return;
      source.close();
      this._ended("sse", connected, 0);
    };
  }

  async _poll(generation) {
    // Without a cursor, ask from a malformed one: the server answers `reset` with its head,
    // which is exactly "from now on" (contract section 7, cursors).
    let after = this.cursor ?? "start";
    let wait = 0;
    let connected = false;
    while (generation === this.generation) {
      const abort = new AbortController();
      this.pollAbort = abort;
      const query = new URLSearchParams({ after, wait: String(wait) });
      if (this.clientAppId) query.set("clientAppId", this.clientAppId);
      let page;
      try {
        page = await api(`/api/events?${query}`, { signal: abort.signal });
      } catch (error) {
        if (generation !== this.generation || error.name === "AbortError") return;
        if (error.status === 401 || error.status === 403) return this._fatal(error.code);
        if (error.status === 429) {
          await sleep((error.retryAfter ?? 5) * 1000);
          continue;
        }
        return this._ended("poll", connected, 0);
      }
      if (generation !== this.generation) return;
      if (!connected) {
        connected = true;
        this._receive({ type: "connected", id: this.cursor }, "poll");
      }
      for (const event of page.events) this._receive(event, "poll");
      this._enqueue({ advance: page.cursor });
      after = page.cursor;
      wait = POLL_WAIT_SECONDS;
    }
  }

  async _ended(transport, connected, code) {
    if (this.stopped) return;
    const generation = this.generation;
    if (code === CLOSE_NO_SESSION) return this._fatal("no_session");
    if (code === CLOSE_FORBIDDEN && transport === "ws") {
      this.transport = "sse";
      return this._connect();
    }
    if (connected) {
      this.failures[transport] = 0;
    } else if (transport !== "poll") {
      // It never connected. If the server answers plain HTTP, this transport is what is
      // blocked (a proxy, a firewall): after two such failures use the next one.
      const healthy = code !== TOO_MANY_STREAMS && (await this._serverAnswers());
      if (generation !== this.generation || this.stopped) return;
      if (healthy && ++this.failures[transport] >= 2) {
        this.transport = transport === "ws" ? "sse" : "poll";
        this.attempt = 0;
        return this._connect();
      }
    }
    const minimum = code === TOO_MANY_STREAMS ? 5000 : 0;
    this._scheduleReconnect(minimum);
  }

  async _serverAnswers() {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), HEALTH_TIMEOUT_MS);
    try {
      return (await fetch("/health", { signal: abort.signal, cache: "no-store" })).ok;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  _scheduleReconnect(minimumMs = 0) {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    // Jitter spreads the reconnects of many booths after a server restart.
    const delay = Math.max(minimumMs, ceiling / 2 + Math.random() * (ceiling / 2));
    this.attempt += 1;
    this._setStatus({ state: navigator.onLine ? "reconnecting" : "offline", retryInMs: delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._connect(), delay);
  }

  _reconnectNow() {
    clearTimeout(this.timer);
    this._connect();
  }

  _networkBack() {
    if (this.stopped) return;
    // A new network may allow what the old one blocked.
    this.transport = "ws";
    this.failures = { ws: 0, sse: 0 };
    if (this.status.state !== "live") this._reconnectNow();
  }

  _fatal(code) {
    this.stop();
    this._setStatus({ state: "failed", code });
    this.fatalHandler?.(code);
  }

  _setStatus(change) {
    this.status = { ...this.status, transport: this.transport, ...change };
    for (const handler of this.statusHandlers) handler(this.status);
  }

  // Delivery: one event at a time, in order, even while a reset refetches state.

  _receive(data, transport) {
    if (NO_EVENT_TYPES.has(data.type)) return;
    if (data.type === "connected") {
      this.attempt = 0;
      this.everLive = true;
      this._setStatus({ state: "live", transport, retryInMs: 0 });
      if (!this.cursor && data.id) this._enqueue({ advance: data.id });
      return;
    }
    if (data.type === "reset") return this._enqueue({ reset: data.cursor ?? data.id });
    if (!data.id || this.seen.has(data.id)) return;
    this.seen.add(data.id);
    if (this.seen.size > SEEN_MAX) this.seen.delete(this.seen.values().next().value);
    this._enqueue({ event: data });
  }

  _enqueue(item) {
    this.queue.push(item);
    if (!this.draining) this._drain();
  }

  async _drain() {
    this.draining = true;
    try {
      while (this.queue.length) {
        const item = this.queue.shift();
        if (item.reset !== undefined) {
          try {
            await this.resetHandler?.(item.reset);
          } catch (error) {
            console.warn("photobooth: refetching state after reset failed", error);
          }
          this._advance(item.reset);
        } else if (item.advance !== undefined) {
          this._advance(item.advance);
        } else {
          this._dispatch(item.event);
          this._advance(item.event.id);
        }
      }
    } finally {
      this.draining = false;
    }
  }

  _dispatch(event) {
    const handler = this.routes.get(event.taskId);
    if (handler) return this._call(handler, event);
    if (!this.orphans.has(event.taskId)) {
      this.orphans.set(event.taskId, []);
      if (this.orphans.size > ORPHANS_MAX) this.orphans.delete(this.orphans.keys().next().value);
    }
    this.orphans.get(event.taskId).push(event);
    for (const fn of this.unrouted) this._call(fn, event);
  }

  _call(handler, event) {
    try {
      handler(event);
    } catch (error) {
      console.error("photobooth: an event handler failed", event, error);
    }
  }

  _advance(cursor) {
    if (!cursor) return;
    this.cursor = cursor;
    perTab.setItem(this.cursorKey, cursor);
  }
}
