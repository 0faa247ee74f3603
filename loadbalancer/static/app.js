// The chat page: the join form, then one room. A thin UI over the roomcast client package
// (roomcast-client.js, built from clients/js: reconnects with backoff, resumes with `since`,
// de-duplicates by offset, queues what is typed offline, acknowledges sends); this file wires it
// to the ordered message list (timeline.js) and the DOM (ui.js), and exposes a read-only
// `window.roomcast` for tests and curious people: `roomcast.state`, `roomcast.messages` (copies).

import { JoinError, RoomcastClient, tokenFromUrl } from "./roomcast-client.js";
import { BACKOFF, RECENT_HISTORY, TYPING_INTERVAL_MS } from "./settings.js";
import { Roster } from "./roster.js";
import { Timeline } from "./timeline.js";
import * as ui from "./ui.js";

const TYPING_SHOWN_MS = 3000;
const TICK_MS = 250;
const NAME_KEY = "roomcast.name";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

function chatUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/chat`;
}

// With tokens required (docs/security.md), open the page as /#token=<jwt> (or /?token=<jwt>).
// The client offers it as the `roomcast.token.` subprotocol, never in the WebSocket URL, which
// proxies and servers log.
// Read once, then taken out of the address bar (history, screenshots, shared links) and kept for
// this tab only, so moving to another room (a new page load) keeps it.
const TOKEN_KEY = "roomcast.token";
const initialToken = (() => {
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromFragment) {
    try {
      sessionStorage.setItem(TOKEN_KEY, fromFragment);
    } catch {
      // storage disabled: this page load still has it
    }
    history.replaceState(null, "", location.pathname + location.search);
    return fromFragment;
  }
  const fromQuery = params.get("token");
  if (fromQuery) return fromQuery;
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
})();

function pageToken() {
  return initialToken;
}

// Or where to get a fresh token (the application's token URL, with the page's own cookies): asked
// before every connection and when the server says the token expires, so the page outlives any
// one token. Same origin only: a link must not make the page log in as someone else's user.
// Set by <meta name="roomcast-token-url" content="/path">, or ?token_url=/path.
function pageTokenUrl() {
  const url = document.querySelector('meta[name="roomcast-token-url"]')?.content ?? params.get("token_url");
  return url && url.startsWith("/") && !url.startsWith("//") ? url : null;
}

function pageTokenSource() {
  const url = pageTokenUrl();
  return url ? tokenFromUrl(url) : pageToken();
}

// Navigating keeps every other parameter (the token above all) and makes the room bookmarkable.
function navigate(changes) {
  const next = new URLSearchParams(params);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null) next.delete(key);
    else next.set(key, value);
  }
  location.search = next.toString();
}

function remembered() {
  try {
    return localStorage.getItem(NAME_KEY);
  } catch {
    return null; // storage disabled: nothing to prefill
  }
}

function remember(name) {
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch {
    // storage disabled: the name is simply not remembered
  }
}

const RECOVERY_NOTICES = {
  epoch_changed:
    "The server lost this room's history (its epoch changed): reloaded what it has now. Messages from the gap may be missing.",
  too_old:
    "You were away longer than the server keeps messages: reloaded its recent history. Some messages in the gap are lost.",
  overloaded: "The server was too busy to replay what you missed: reloaded its recent history.",
};

const LOSS_NOTICES = {
  epoch_changed:
    "The server lost this room's history (Redis restarted empty): messages sent since the last one shown may be missing. Reloaded what it has now.",
  too_old: "Some messages could not be delivered (no longer kept by the server). Reloaded its recent history.",
  unavailable: "Some messages could not be delivered (the server could not read them back in time). Reloaded its recent history.",
};

// Why a message was not sent, in words (SendError codes: the client's and the server's).
function failureText(code, client) {
  switch (code) {
    case "too_big":
      return `longer than the server accepts (${client.maxFrameBytes} bytes)`;
    case "unconfirmed":
      return "the server could not confirm it (connection or Redis lost); it may or may not have been sent";
    case "expired":
      return "no connection for too long";
    case "queue_full":
      return "too many messages are waiting for the connection";
    case "rate_limited":
      return "too many messages at once: the server refused this one";
    case "unavailable":
      return "the server could not store this message (Redis is down)";
    default:
      return code;
  }
}

// The badge's words for the client's states.
const STATUS = { idle: "idle", connecting: "connecting", connected: "connected", reconnecting: "reconnecting", offline: "offline", closed: "offline" };

function startChat(room, requestedName) {
  const client = new RoomcastClient(chatUrl(), requestedName, {
    token: pageTokenSource(),
    // The client's own room from the start: a join refused for now (rate_limited, as when many
    // clients of one address come back at once) is retried by the client, never given up.
    rooms: [room],
    backoff: BACKOFF,
    typingInterval: TYPING_INTERVAL_MS,
  });
  const timeline = new Timeline();
  const typing = new Map(); // user_id (or username, from an older server) -> {username, until}
  const statusLog = []; // every status change, for tests and debugging
  const notices = [];
  const outbox = []; // {id, text, status: queued | sent | failed, reason, outgoing}
  let username = requestedName; // the server's word (joined) replaces it: tokens fix the name
  let synced = false; // joined, and the catch-up (if any) has fully arrived
  let lastDisconnect = null; // close code of the connection just lost, for the next notice
  let removal = null; // {kind, reason, until}: the application removed, banned or disconnected us

  const snapshotStatus = () => ({
    status: STATUS[client.state],
    node: client.node,
    retryAt: client.retryAt,
    offlineReason: client.closed?.reason ?? null,
  });
  const notice = (text, kind = "info") => {
    notices.push({ text, kind });
    ui.addNotice(text, kind);
  };
  const typingNames = () => [...typing.values()].map((who) => who.username);
  const typingKey = (event) => event.userId ?? `name:${event.username}`;
  const showTyping = () => ui.renderTyping(typingNames());
  // Oneself by user_id; an entry without one (a node of the previous release) by name, and only
  // while this connection has no id either (an id-less namesake on another node is not us).
  const isSelf = (person) =>
    person.userId !== null ? client.isOwn({ room, username: person.username, userId: person.userId }) : client.userId === null && person.username === username;
  const roster = new Roster(client, room, () => showPresence()); // one entry per person
  const presence = roster.presence;
  const presenceView = () => presence.people().map((person) => ({ ...person, you: isSelf(person) }));
  const showPresence = () => ui.renderPresence(presenceView(), presence.unlisted);
  // The (epoch, offset) of each message this page sent, from its acknowledgement: its own
  // whatever its echo carries (a node of the previous release stamps no user_id).
  const ownPositions = new Set();
  const positionKey = (epoch, offset) => `${epoch}:${offset}`;
  const showOutbox = () => ui.renderOutbox(outbox, { onRetry: retry, onDiscard: discard });
  const markDeleted = (epoch, offset) => {
    const entry = timeline.get(epoch, offset);
    if (!entry || entry.deleted) return;
    Object.assign(entry, { deleted: true, username: "", text: "" });
    ui.markDeleted(entry);
  };
  const addMessage = (message) => {
    const entry = { epoch: message.epoch, offset: message.offset, username: message.username, text: message.text, timestamp: message.timestamp, own: client.isOwn(message) || ownPositions.has(positionKey(message.epoch, message.offset)), deleted: message.deleted === true };
    const index = timeline.insert(entry);
    if (index < 0) {
      // Shown already; a tombstone (history, resume) says it was deleted meanwhile.
      if (entry.deleted) markDeleted(entry.epoch, entry.offset);
      return;
    }
    if (typing.delete(typingKey(message))) showTyping();
    ui.insertMessage(entry, timeline.entries[index + 1]);
  };
  const reloadHistory = (limit) =>
    client.history(room, limit).then(
      (history) => history.messages.forEach(addMessage),
      () => undefined, // lost with the connection: the next join brings what was missed
    );

  // The outbox: what was typed and not yet confirmed by the server's ack.
  function send(text) {
    const outgoing = client.send(room, text);
    const item = { id: outgoing.id, text, status: "queued", reason: null, outgoing };
    outbox.push(item);
    outgoing.then(
      ({ epoch, offset }) => {
        ownPositions.add(positionKey(epoch, offset));
        const shown = timeline.get(epoch, offset);
        if (shown && !shown.own) {
          shown.own = true; // its echo came first, without our user_id
          ui.markOwn(shown);
        }
        outbox.splice(outbox.indexOf(item), 1);
        showOutbox();
      },
      (error) => {
        item.status = "failed";
        // Sent, but its fate is unknown: shown as "may not have been sent", not as refused.
        item.unconfirmed = error.code === "unconfirmed";
        item.reason = failureText(error.code, client);
        showOutbox();
      },
    );
    syncOutbox();
  }
  function retry(id) {
    const item = outbox.find((entry) => entry.id === id && entry.status === "failed");
    if (!item) return;
    outbox.splice(outbox.indexOf(item), 1);
    send(item.text);
  }
  function discard(id) {
    const index = outbox.findIndex((entry) => entry.id === id);
    if (index >= 0) outbox.splice(index, 1);
    showOutbox();
  }
  function syncOutbox() {
    for (const item of outbox) {
      if (item.status !== "failed") item.status = item.outgoing.status === "sent" ? "sent" : "queued";
    }
    showOutbox();
  }

  // A refused join (forbidden, invalid name...) cannot be fixed by reconnecting: stop, say why,
  // and keep the room so that "Reconnect now" tries again and what is typed meanwhile waits.
  function joinRoom() {
    client.join(room).catch((error) => {
      if (!(error instanceof JoinError)) return; // the client rejoins by itself
      client.disconnect(`the server refused to join: ${error.error.reason}`);
      joinRoom();
    });
  }

  client.on("state", ({ state }) => {
    const status = snapshotStatus();
    statusLog.push({ status: status.status, node: status.node, at: Date.now() });
    ui.renderStatus(status);
    if (status.status === "offline") notice(`Disconnected: ${status.offlineReason}.`, "error");
  });
  client.on("disconnected", ({ code }) => {
    synced = false;
    lastDisconnect = code;
    typing.clear();
    showTyping();
  });
  client.on("reconnecting", ({ delay }) => {
    const what = lastDisconnect === null ? "Could not connect" : `Connection lost (code ${lastDisconnect})`;
    lastDisconnect = null;
    notice(`${what}; reconnecting in ${(delay / 1000).toFixed(1)} s…`, "warning");
    ui.renderStatus(snapshotStatus());
  });
  client.on("rejoining", ({ room: where, delay }) => {
    if (where === room) notice(`The server is busy; joining #${room} again in ${(delay / 1000).toFixed(1)} s…`, "warning");
  });
  client.on("joined", (joined) => {
    if (joined.room !== room || joined.already) return;
    username = joined.username;
    ui.setIdentity(username);
    showPresence();
    if (joined.recovered === null) {
      notice(`You joined #${room} as ${username} (on ${client.node}).`);
      reloadHistory(RECENT_HISTORY);
    } else if (joined.recovered) {
      notice(`Reconnected to ${client.node}: nothing was missed.`);
    } else {
      notice(RECOVERY_NOTICES[joined.reason] ?? `Reconnected, but not resumed (${joined.reason}).`, "warning");
    }
    // Frames are answered in order: the presence answer comes after the join's catch-up.
    roster.reload().finally(() => {
      if (client.isJoined(room)) synced = true;
    });
  });
  // Messages may be missing (a resume that could not recover, a loss notice): reload history.
  client.on("gap", (gap) => gap.room === room && reloadHistory());
  client.on("loss", (loss) => {
    if (loss.room === room) notice(LOSS_NOTICES[loss.reason] ?? `Some messages were lost (${loss.reason}). Reloaded the history.`, "warning");
  });
  client.on("message", (message) => message.room === room && addMessage(message));
  client.on("message_deleted", ({ room: where, epoch, offset }) => where === room && markDeleted(epoch, offset));
  client.on("history_cleared", ({ room: where, epoch, upToOffset }) => {
    if (where !== room) return;
    for (const entry of timeline.removeUpTo(epoch, upToOffset)) ui.removeMessage(entry);
    notice("The room's history was cleared.", "warning");
  });
  client.on("disconnect", ({ reason, reconnect }) => {
    removal = { kind: reconnect ? "disconnected" : "disconnected_for_good", reason };
    notice(reconnect ? `The server disconnected you: ${reason}. Reconnecting…` : `The server disconnected you for good: ${reason}.`, "error");
  });
  for (const kind of ["removed", "banned"]) {
    client.on(kind, (event) => {
      if (event.room !== room) return;
      removal = { kind, reason: event.reason, until: event.until ?? null };
      const until = event.until ? ` until ${new Date(event.until).toLocaleString()}` : "";
      const what = kind === "banned" ? `You were banned from #${room}${until}` : `You were removed from #${room}`;
      notice(`${what}: ${event.reason}`, "error");
      ui.disableSending(kind === "banned" ? `banned from #${room}` : `removed from #${room}`);
      synced = false;
    });
  }
  client.on("user_joined", (event) => {
    if (event.room !== room) return;
    notice(`${event.username} joined.`, "presence");
  });
  client.on("user_left", (event) => {
    if (event.room !== room) return;
    if (typing.delete(typingKey(event))) showTyping();
    notice(`${event.username} left.`, "presence");
  });
  client.on("typing", (event) => {
    if (event.room !== room || client.isOwn(event)) return;
    typing.set(typingKey(event), { username: event.username, until: Date.now() + TYPING_SHOWN_MS });
    showTyping();
  });
  client.on("outbox", syncOutbox);
  client.on("error", (error) => {
    // Refused messages show in the outbox, refused joins in the badge; typing hints do not matter.
    if (typeof error.id === "number" || (String(error.id).startsWith("join:") && error.code !== "unavailable")) return;
    if (error.reason.includes("typing")) return;
    notice(`The server said: ${error.reason}`, "error");
  });

  $("send").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value;
    if (!text.trim()) return;
    send(text);
    $("text").value = "";
  });
  // Throttled by the client, with a trailing notice: whoever keeps typing is announced again.
  let typingLater = null;
  const announceTyping = () => {
    typingLater = null;
    if (!$("text").value.trim() || client.typing(room) || !client.isJoined(room)) return;
    typingLater = setTimeout(announceTyping, TYPING_INTERVAL_MS / 3);
  };
  $("text").addEventListener("input", () => typingLater === null && announceTyping());
  $("leave").addEventListener("click", () => {
    client.close();
    navigate({ room: null });
  });
  $("reconnect").addEventListener("click", () => client.reconnect());
  window.addEventListener("online", () => client.reconnect());
  // A page left for another keeps its WebSocket open in the back/forward cache, and the browser
  // answers the server's pings for it: the reader stayed listed in the room for as long as the
  // page was kept (over 90 s measured in Chromium, after navigating to about:blank). Leaving
  // closes the connection; coming back (the Back button) reconnects and resumes with `since`.
  window.addEventListener("pagehide", () => {
    client.disconnect("the page was left");
  });
  window.addEventListener("pageshow", (event) => event.persisted && client.reconnect());
  window.addEventListener("offline", () => notice("The browser reports no network.", "warning"));

  // The countdown in the badge, and typing hints that expire.
  setInterval(() => {
    if (client.retryAt !== null) ui.renderStatus(snapshotStatus());
    const now = Date.now();
    let expired = false;
    for (const [key, { until }] of typing) {
      if (until <= now) expired = typing.delete(key) || expired;
    }
    if (expired) showTyping();
  }, TICK_MS);

  ui.showChat(room, requestedName);
  joinRoom();

  return () => ({
    ...snapshotStatus(),
    synced: synced && client.isJoined(room),
    connection: client.connectionId,
    userId: client.userId,
    room,
    username,
    attempt: client.attempt,
    lastSeen: client.position(room),
    outbox: outbox.map(({ id, text, status, reason }) => ({ id, text, status, reason })),
    presence: presenceView(), // [{username, userId, connections, you}], by name
    presenceCount: presence.count,
    typing: typingNames(),
    statusLog,
    notices,
    removal,
    messages: timeline.entries,
  });
}

$("join").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("name").value.trim();
  remember(name);
  navigate({ name, room: $("room").value.trim() });
});

const room = params.get("room")?.trim();
const name = params.get("name")?.trim();
let snapshot = () => ({ status: "idle", messages: [] });
if (room && name) snapshot = startChat(room, name);
else ui.showJoinForm(name || remembered(), room);

window.roomcast = Object.freeze({
  get state() {
    const { messages, ...state } = structuredClone(snapshot());
    return state;
  },
  get messages() {
    return structuredClone(snapshot().messages);
  },
});
