// History and mockup result pages: server-rendered task cards that refresh themselves.
//
// The server renders every card; while a task runs, its events only say "this card changed",
// and the card is fetched again as HTML (at most every REFRESH_MS). One template draws a card,
// before and after it finishes.

import { EventFeed, readConfig } from "./photobooth-client.js";
import { $, $$, announce, bindConnection, localizeTimes, setUpViewer } from "./ui.js";

const REFRESH_MS = 700;
const config = readConfig();
const list = $("#task-list"); // the history page; absent on a result page
const followed = new Map(); // taskId -> stop routing

setUpViewer();
localizeTimes();

let feed = null;
let timer = null;
let refreshing = false;
let again = false;

function scheduleRefresh() {
  if (timer) return;
  timer = setTimeout(refresh, REFRESH_MS);
}

async function refresh() {
  timer = null;
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = true;
  try {
    const response = await fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
    if (response.ok) merge(new DOMParser().parseFromString(await response.text(), "text/html"));
  } catch {
    // Offline for a moment: the next event (or the reconnect's replay) refreshes again.
  } finally {
    refreshing = false;
    if (again) {
      again = false;
      scheduleRefresh();
    }
  }
}

const DONE_WORDS = { completed: "is ready", failed: "failed", cancelled: "was cancelled" };

function merge(doc) {
  let previous = null;
  for (const fresh of $$(".task-card", doc)) {
    localizeTimes(fresh);
    let card = document.getElementById(fresh.id);
    if (card && !card.isEqualNode(fresh)) {
      const title = $("h1, h2", fresh)?.textContent ?? "A task";
      if (card.dataset.status !== fresh.dataset.status && DONE_WORDS[fresh.dataset.status]) {
        announce(`${title} ${DONE_WORDS[fresh.dataset.status]}.`);
      }
      const hadFocus = card.contains(document.activeElement);
      const replacement = document.importNode(fresh, true);
      card.replaceWith(replacement);
      card = replacement;
      if (hadFocus) {
        card.setAttribute("tabindex", "-1");
        card.focus();
      }
    } else if (!card && list) {
      card = document.importNode(fresh, true);
      const item = document.createElement("li");
      item.append(card);
      if (previous) previous.closest("li").after(item);
      else list.prepend(item);
      $("#history-empty")?.remove();
    }
    if (card) {
      previous = card;
      follow(card);
    }
  }
}

/** Refresh a card on its task's events until it is finished. */
function follow(card) {
  const taskId = card.dataset.taskId;
  if (card.dataset.finished === "true") {
    followed.get(taskId)?.();
    followed.delete(taskId);
    if (!list) stopFeed();
    return;
  }
  if (!followed.has(taskId)) followed.set(taskId, feed.route(taskId, scheduleRefresh));
}

function stopFeed() {
  feed.stop();
  const pill = $("#connection-status");
  if (pill) pill.hidden = true;
}

const single = list ? null : $(".task-card");
if (list) {
  // The whole session: a task started elsewhere shows up on the first page.
  feed = new EventFeed({ heartbeatSeconds: config.heartbeatSeconds, cursorKey: "photobooth:cursor:history" });
  feed.onUnrouted(() => {
    if (list.dataset.page === "1") scheduleRefresh();
  });
} else if (single && single.dataset.finished !== "true") {
  feed = new EventFeed({
    clientAppId: single.dataset.clientAppId,
    heartbeatSeconds: config.heartbeatSeconds,
    cursorKey: `photobooth:cursor:task:${single.dataset.taskId}`,
  });
}

if (feed) {
  bindConnection(feed);
  // Events after the page was rendered are what can change it; a reset means "look again".
  feed.onReset(async () => scheduleRefresh());
  for (const card of $$(".task-card")) follow(card);
  feed.start(config.headCursor);
}
document.body.dataset.ready = "true";
