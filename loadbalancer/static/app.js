// The chat page: the join form, then one room. Wires the connection (connection.js), the ordered
// message list (timeline.js) and the DOM (ui.js), and exposes a read-only `window.roomcast`
// for tests and curious people: `roomcast.state`, `roomcast.messages` (copies).

import { RoomConnection } from "./connection.js";
import { Timeline } from "./timeline.js";
import * as ui from "./ui.js";

const TYPING_SHOWN_MS = 3000;
const TICK_MS = 250;
const NAME_KEY = "roomcast.name";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

function chatUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // With tokens required (README, Security), open the page as /?token=<jwt>.
  const token = params.get("token");
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${scheme}//${location.host}/chat${query}`;
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

function startChat(room, username) {
  const timeline = new Timeline();
  const presence = new Map(); // username -> open connections
  const typing = new Map(); // username -> until when it is shown
  const statusLog = []; // every status change, for tests and debugging
  const notices = [];
  const outboxHandlers = {
    onRetry: (id) => connection.retry(id),
    onDiscard: (id) => connection.discard(id),
  };

  const notice = (text, kind = "info") => {
    notices.push({ text, kind });
    ui.addNotice(text, kind);
  };
  const showTyping = () => ui.renderTyping([...typing.keys()]);
  const showPresence = () => ui.renderPresence(presence, connection.username);
  const addMessage = (message) => {
    const index = timeline.insert(message);
    if (index < 0) return;
    if (typing.delete(message.username)) showTyping();
    ui.insertMessage(message, timeline.entries[index + 1]);
  };

  const onEvent = (kind, data) => {
    switch (kind) {
      case "status": {
        const snapshot = connection.snapshot();
        statusLog.push({ status: snapshot.status, node: snapshot.node, at: Date.now() });
        ui.renderStatus(snapshot);
        if (snapshot.status === "offline") notice(`Disconnected: ${snapshot.offlineReason}.`, "error");
        break;
      }
      case "closed": {
        const seconds = (data.delay / 1000).toFixed(1);
        const what = connection.node === null ? "Could not connect" : `Connection lost (code ${data.code})`;
        notice(`${what}; reconnecting in ${seconds} s…`, "warning");
        typing.clear();
        showTyping();
        break;
      }
      case "joined":
        ui.setIdentity(data.username);
        if (!data.resumed) notice(`You joined #${room} as ${data.username} (on ${connection.node}).`);
        else if (data.recovered) notice(`Reconnected to ${connection.node}: nothing was missed.`);
        else notice(RECOVERY_NOTICES[data.reason] ?? `Reconnected, but not resumed (${data.reason}).`, "warning");
        break;
      case "message":
        addMessage(data);
        break;
      case "loss":
        notice(LOSS_NOTICES[data.reason] ?? `Some messages were lost (${data.reason}). Reloaded the history.`, "warning");
        break;
      case "history":
        for (const message of data.messages) addMessage(message);
        break;
      case "presence":
        presence.clear();
        for (const member of data.members) presence.set(member.username, member.connections);
        showPresence();
        break;
      case "user_joined":
        presence.set(data.username, (presence.get(data.username) ?? 0) + 1);
        showPresence();
        notice(`${data.username} joined.`, "presence");
        break;
      case "user_left": {
        const left = (presence.get(data.username) ?? 1) - 1;
        if (left > 0) presence.set(data.username, left);
        else presence.delete(data.username);
        if (typing.delete(data.username)) showTyping();
        showPresence();
        notice(`${data.username} left.`, "presence");
        break;
      }
      case "typing":
        typing.set(data.username, Date.now() + TYPING_SHOWN_MS);
        showTyping();
        break;
      case "outbox":
        ui.renderOutbox(connection.outbox, outboxHandlers);
        break;
      case "error":
        notice(`The server said: ${data.reason}`, "error");
        break;
      default:
        break;
    }
  };

  const connection = new RoomConnection({ url: chatUrl(), room, username, onEvent });

  $("send").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value;
    if (!text.trim()) return;
    connection.send(text);
    $("text").value = "";
  });
  $("text").addEventListener("input", () => {
    if ($("text").value.trim()) connection.typing();
  });
  $("leave").addEventListener("click", () => {
    connection.stop();
    navigate({ room: null });
  });
  $("reconnect").addEventListener("click", () => connection.reconnectNow());
  window.addEventListener("online", () => connection.reconnectNow());
  window.addEventListener("offline", () => notice("The browser reports no network.", "warning"));

  // The countdown in the badge, and typing hints that expire.
  setInterval(() => {
    if (connection.retryAt !== null) ui.renderStatus(connection.snapshot());
    const now = Date.now();
    let expired = false;
    for (const [name, until] of typing) {
      if (until <= now) expired = typing.delete(name) || expired;
    }
    if (expired) showTyping();
  }, TICK_MS);

  ui.showChat(room, username);
  connection.start();

  return () => ({
    ...connection.snapshot(),
    presence: Object.fromEntries(presence),
    typing: [...typing.keys()],
    statusLog,
    notices,
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
