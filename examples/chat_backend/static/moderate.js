// The moderator view: messages from PostgreSQL; each action goes through this app to roomcast's
// server API (delete by offset, remove, ban, disconnect), on every node.
"use strict";

const moderation = { rows: [], results: [], loaded: 0 };
window.moderation = moderation;
const $ = (id) => document.getElementById(id);

async function post(path, body) {
  const answer = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const result = { path, status: answer.status, body: await answer.json() };
  moderation.results.push(result);
  $("result").textContent = JSON.stringify(result, null, 2);
  return result;
}

function button(label, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = label.toLowerCase().replace(/\s+/g, "-");
  b.addEventListener("click", action);
  return b;
}

function row(room, m) {
  const tr = document.createElement("tr");
  tr.dataset.id = String(m.id);
  tr.dataset.user = m.username;
  const cells = [String(m.id), m.offset == null ? "" : String(m.offset), m.username,
    m.deleted ? "(deleted)" : m.text];
  for (const value of cells) {
    const td = document.createElement("td");
    td.textContent = value;
    tr.append(td);
  }
  const actions = document.createElement("td");
  actions.append(
    button("Delete", async () => { await post("/api/moderate/delete", { id: m.id }); load(); }),
    button("Remove", () => post("/api/moderate/remove", { room, user: m.username })),
    button("Ban 1h", () => post("/api/moderate/ban", { room, user: m.username, seconds: 3600 })),
    button("Disconnect", () => post("/api/moderate/disconnect", { user: m.username })),
  );
  tr.append(actions);
  return tr;
}

async function load() {
  const room = $("room").value;
  const answer = await fetch(`/api/history/${encodeURIComponent(room)}?limit=200`);
  const body = await answer.json();
  moderation.rows = body.messages;
  $("messages").tBodies[0].replaceChildren(...body.messages.map((m) => row(room, m)));
  moderation.loaded += 1;
  const rooms = await (await fetch("/api/moderate/rooms")).json();
  $("rooms").textContent = rooms.rooms.map((r) => `${r.room} (${r.messages})`).join(", ");
}

$("pick").addEventListener("submit", (event) => { event.preventDefault(); load(); });
load();
