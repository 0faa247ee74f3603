// The DOM side of the page. User data only ever goes through textContent and attributes set
// with setAttribute: never innerHTML, so a message like <img onerror=…> is shown, not run.

const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatTime(timestamp) {
  return new Date(timestamp).toLocaleTimeString([], {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

// Follow the conversation only when the reader is already at the bottom.
function keepScrolled(update) {
  const log = $("log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  update();
  if (atBottom) log.scrollTop = log.scrollHeight;
}

export function showJoinForm(name, room) {
  $("name").value = name ?? "";
  $("room").value = room ?? "general";
  $("join").hidden = false;
  $("chat").hidden = true;
  $("name").focus();
}

export function showChat(room, username) {
  $("join").hidden = true;
  $("chat").hidden = false;
  $("room-title").textContent = `#${room}`;
  $("me").textContent = username;
  document.title = `#${room} · roomcast`;
  $("text").focus();
}

export function setIdentity(username) {
  $("me").textContent = username;
}

export function renderStatus(snapshot, now = Date.now()) {
  const badge = $("status");
  let text;
  switch (snapshot.status) {
    case "connecting":
      text = "connecting…";
      break;
    case "connected":
      text = `connected to ${snapshot.node}`;
      break;
    case "reconnecting":
      text =
        snapshot.retryAt === null
          ? "reconnecting…"
          : `reconnecting in ${(Math.max(0, snapshot.retryAt - now) / 1000).toFixed(1)} s`;
      break;
    case "offline":
      text = `offline: ${snapshot.offlineReason}`;
      break;
    default:
      text = "not connected";
  }
  badge.textContent = text;
  badge.dataset.status = snapshot.status;
  $("reconnect").hidden = !(snapshot.status === "offline" || snapshot.retryAt !== null);
}

const messageElements = new WeakMap(); // timeline entry -> its <li>

export function insertMessage(entry, next) {
  const item = element("li", entry.own ? "message own" : "message");
  item.dataset.epoch = entry.epoch;
  item.dataset.offset = String(entry.offset);
  const time = element("time", "time", formatTime(entry.timestamp));
  time.setAttribute("datetime", new Date(entry.timestamp).toISOString());
  item.append(time, element("span", "author", entry.username), element("span", "text", entry.text));
  messageElements.set(entry, item);
  if (entry.deleted) markDeleted(entry);
  keepScrolled(() => {
    const before = next && messageElements.get(next);
    if (before) before.before(item);
    else $("log").append(item);
  });
}

// A deleted message keeps its place, without its author or words.
export function markDeleted(entry) {
  const item = messageElements.get(entry);
  if (!item) return;
  item.classList.add("deleted");
  item.querySelector(".author")?.replaceChildren();
  item.querySelector(".text")?.replaceChildren(document.createTextNode("message deleted"));
}

// One's own message, recognised after it was shown (its acknowledgement came after its echo).
export function markOwn(entry) {
  messageElements.get(entry)?.classList.add("own");
}

export function removeMessage(entry) {
  messageElements.get(entry)?.remove();
  messageElements.delete(entry);
}

// Removed or banned from the room: no more sending here.
export function disableSending(reason) {
  for (const id of ["text", "send-button"]) {
    const control = document.getElementById(id);
    if (control) control.disabled = true;
  }
  const text = document.getElementById("text");
  if (text) text.placeholder = reason;
}

export function addNotice(text, kind = "info") {
  const item = element("li", `notice ${kind}`);
  item.append(element("time", "time", formatTime(Date.now())), element("span", "text", text));
  keepScrolled(() => $("log").append(item));
}

// One row per person (`people`: {username, userId, connections, you}, by name). Namesakes are
// distinct rows, each with the start of its user id so a reader can tell them apart.
export function renderPresence(people, unlisted = 0) {
  const names = new Map();
  for (const person of people) names.set(person.username, (names.get(person.username) ?? 0) + 1);
  const rows = people.map((person) => {
    const item = element("li", person.you ? "member self" : "member");
    if (person.userId !== null) item.dataset.userId = person.userId;
    item.append(element("span", "name", person.username));
    if (names.get(person.username) > 1 && person.userId !== null) {
      const tag = element("span", "tag", ` #${person.userId.slice(0, 4)}`);
      tag.setAttribute("title", person.userId);
      item.append(tag);
    }
    if (person.you) item.append(element("span", "hint", " (you)"));
    if (person.connections > 1) item.append(element("span", "hint", ` ×${person.connections}`));
    return item;
  });
  if (unlisted > 0) rows.push(element("li", "member more", `and ${unlisted} more`));
  $("presence").replaceChildren(...rows);
  $("presence-count").textContent = String(people.length + unlisted);
}

export function renderTyping(names) {
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = `${names.length} people are typing…`;
  $("typing").textContent = text;
}

export function renderOutbox(items, { onRetry, onDiscard }) {
  keepScrolled(() =>
    $("outbox").replaceChildren(
      ...items.map((item) => {
        const row = element("li", `message own pending ${item.status}`);
        row.dataset.outboxId = String(item.id);
        const label =
          item.status === "failed"
            ? item.unconfirmed
              ? `may not have been sent: ${item.reason}`
              : `not sent: ${item.reason}`
            : item.status === "sent"
              ? "sending…"
              : "waiting for the connection…";
        row.append(element("span", "state", label), element("span", "text", item.text));
        if (item.status === "failed") {
          const retry = element("button", "link", "retry");
          retry.type = "button";
          retry.addEventListener("click", () => onRetry(item.id));
          const discard = element("button", "link", "discard");
          discard.type = "button";
          discard.addEventListener("click", () => onDiscard(item.id));
          row.append(retry, discard);
        }
        return row;
      }),
    ),
  );
}
