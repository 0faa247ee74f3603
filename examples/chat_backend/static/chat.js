// The example's chat page: log in (cookie session), connect to roomcast (the connect hook reads
// the cookie), show the room's long-term history from PostgreSQL, then live messages.
"use strict";

const state = {
  user: null, connected: false, joined: false, room: null, topic: null,
  messages: [], notices: [], closes: [], stopped: false,
};
window.chat = state;
const $ = (id) => document.getElementById(id);
let socket = null;
let lastSeen = null; // {epoch, offset} of the newest live message, for `since` on reconnect
let historyLoaded = false;
let requests = 0;

function notice(text) {
  state.notices.push(text);
  const li = document.createElement("li");
  li.textContent = text;
  $("notices").append(li);
}

function keyOf(m) {
  return m.message_id || (m.epoch && m.offset != null ? `${m.epoch}:${m.offset}` : `row:${m.id}`);
}

function render(m) {
  const key = keyOf(m);
  let li = document.querySelector(`li[data-key="${CSS.escape(key)}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.key = key;
    $("messages").append(li);
  }
  li.dataset.offset = m.offset == null ? "" : String(m.offset);
  li.dataset.epoch = m.epoch || "";
  li.className = m.deleted ? "deleted" : "";
  const author = document.createElement("b");
  author.textContent = m.username;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = m.deleted ? "(message deleted)" : m.text;
  li.replaceChildren(author, document.createTextNode(": "), text);
}

function remember(m) {
  const key = keyOf(m);
  const known = state.messages.find((x) => keyOf(x) === key);
  if (known) Object.assign(known, m); else state.messages.push(m);
  render(known || m);
}

async function loadHistory(room) {
  const answer = await fetch(`/api/history/${encodeURIComponent(room)}?limit=100`);
  if (!answer.ok) return;
  const body = await answer.json();
  for (const m of body.messages.reverse()) remember(m);
  historyLoaded = true;
}

function markDeleted(epoch, offset) {
  for (const m of state.messages) {
    if (m.epoch === epoch && m.offset === offset) { m.deleted = true; m.text = null; render(m); }
  }
}

function onEvent(event) {
  switch (event.type) {
    case "welcome": {
      const join = { type: "join", room: state.room, id: `join-${++requests}` };
      if (lastSeen) join.since = lastSeen;
      socket.send(JSON.stringify(join));
      break;
    }
    case "joined":
      state.joined = true;
      state.topic = event.data ? event.data.topic : null;
      $("topic").textContent = state.topic ? `— ${state.topic}` : "";
      $("status").textContent = "(live)";
      if (!historyLoaded) loadHistory(state.room);
      break;
    case "message":
      if (event.room !== state.room) break;
      lastSeen = { epoch: event.epoch, offset: event.offset };
      // A deleted message comes back (recovery, history) as a tombstone: no author, no text.
      if (event.deleted) { markDeleted(event.epoch, event.offset); break; }
      remember({
        message_id: event.message_id, username: event.username, text: event.text,
        epoch: event.epoch, offset: event.offset, deleted: !!event.deleted,
      });
      break;
    case "message_deleted":
      markDeleted(event.epoch, event.offset);
      break;
    case "history_cleared":
      notice(`history of ${event.room} cleared`);
      break;
    case "removed":
    case "banned":
      state.joined = false;
      $("status").textContent = `(${event.type})`;
      notice(`${event.type} from ${event.room}: ${event.reason}`);
      break;
    case "disconnect":
      state.stopped = !event.reconnect;
      notice(`disconnected: ${event.reason}`);
      break;
    case "error":
      notice(`${event.code}: ${event.reason}`);
      if (event.code === "join_denied") { state.joined = false; $("status").textContent = "(refused)"; }
      break;
    default:
      break;
  }
}

function connect() {
  socket = new WebSocket(state.wsUrl);
  socket.onopen = () => { state.connected = true; };
  socket.onmessage = (message) => onEvent(JSON.parse(message.data));
  socket.onclose = (close) => {
    state.connected = false;
    state.joined = false;
    state.closes.push(close.code);
    $("status").textContent = "(offline)";
    // 4003: the application disconnected us for good; 403 at the handshake shows as 1006.
    if (close.code === 4003) state.stopped = true;
    if (!state.stopped) setTimeout(connect, 1000);
  };
}

async function start(me) {
  state.user = me.user;
  state.wsUrl = me.ws_url;
  state.room = new URLSearchParams(location.search).get("room") || "lobby";
  $("me").textContent = me.user;
  $("room").textContent = state.room;
  $("moderate-link").hidden = !me.moderator;
  $("login").hidden = true;
  $("chat").hidden = false;
  connect();
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const answer = await fetch("/login", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: $("login-name").value, password: $("login-password").value }),
  });
  if (!answer.ok) { $("login-error").textContent = "wrong name or password"; return; }
  const me = await fetch("/api/me");
  start(await me.json());
});

$("send").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value;
  if (!text || !socket || socket.readyState !== WebSocket.OPEN) return;
  socket.send(JSON.stringify({ type: "message", room: state.room, text, id: `m-${++requests}` }));
  $("text").value = "";
});

$("logout").addEventListener("click", async () => {
  state.stopped = true;
  if (socket) socket.close();
  await fetch("/logout", { method: "POST" });
  location.reload();
});

(async () => {
  const me = await fetch("/api/me");
  if (me.ok) start(await me.json()); else $("login").hidden = false;
})();
