// The article's Node.js chat server ("What Is WebSocket?", shared/reference/websocket-article.txt),
// used as the benchmark baseline. Its code is kept as written; only what is needed to run several
// of these behind nginx with the same protocol as roomcast was changed, each change marked CHANGED:
//
//   - PORT, REDIS_URL and NODE_ID come from the environment; it listens on 127.0.0.1, path /chat,
//     and prints one JSON "listening" line so the benchmark knows its port (PORT=0: any free one).
//   - The article's multi-node part (one Redis channel, "chat:general") is applied per room: a node
//     subscribes to "chat:<room>" when the room gets its first local member and unsubscribes when
//     it loses its last. Messages are published once (JSON.stringify once per broadcast, as in the
//     article) and every node, the sender's included, forwards the string to its local members.
//   - user_joined and typing exclude the sender, as the article's broadcast(room, data, ws) does:
//     the sender's node broadcasts them locally and publishes them prefixed with its NODE_ID and a
//     tab, so that node skips its own copy and the other nodes forward the JSON after the tab.
//   - handleTyping and handleDisconnect are called but not shown in the article; they are written
//     here in the article's style.
//   - Robustness so a benchmark run cannot kill it (see shared/PITFALLS.md): a per-socket 'error'
//     handler (an invalid close code from a client otherwise crashes the whole process) and a
//     try/catch around JSON.parse (invalid JSON otherwise throws out of the message handler).
//
// Not changed: no welcome or joined frame, one room per connection, JSON.stringify per broadcast,
// client.send(string) per recipient, the 30 s heartbeat with ping/terminate.

import { WebSocketServer } from "ws";
import { createClient } from "redis";

// CHANGED: configuration from the environment.
const PORT = Number.parseInt(process.env.PORT ?? "8080", 10);
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const NODE_ID = process.env.NODE_ID ?? `node-${process.pid}`;
const HOST = process.env.HOST ?? "127.0.0.1";

const publisher = createClient({ url: REDIS_URL });
const subscriber = createClient({ url: REDIS_URL });
// CHANGED: a Redis error event without a listener would crash the process; log it instead.
publisher.on("error", (err) => console.error(JSON.stringify({ event: "redis error", error: String(err) })));
subscriber.on("error", (err) => console.error(JSON.stringify({ event: "redis error", error: String(err) })));
await publisher.connect();
await subscriber.connect();

const wss = new WebSocketServer({ host: HOST, port: PORT, path: "/chat" }); // CHANGED: env, path
const rooms = new Map();
const ORIGIN = NODE_ID + "\t"; // CHANGED: marks events this node already broadcast locally

wss.on("connection", (ws) => {
  ws.isAlive = true;
  // CHANGED: without this handler one bad client frame (e.g. an invalid close code) crashes the node.
  ws.on("error", () => ws.terminate());
  ws.on("message", (rawData) => {
    let data;
    try {
      data = JSON.parse(rawData); // CHANGED: guarded; invalid JSON is ignored instead of throwing
    } catch {
      return;
    }
    if (data === null || typeof data !== "object") return; // CHANGED: same guard for non-objects
    switch (data.type) {
      case "join":
        handleJoin(ws, data);
        break;
      case "message":
        handleMessage(ws, data);
        break;
      case "typing":
        handleTyping(ws, data);
        break;
    }
  });
  ws.on("close", () => handleDisconnect(ws));
  ws.on("pong", () => {
    ws.isAlive = true;
  });
});

function handleJoin(ws, data) {
  if (ws.room !== undefined) handleDisconnect(ws); // CHANGED: leave the previous room first
  ws.username = data.username;
  ws.room = data.room;
  if (!rooms.has(data.room)) {
    rooms.set(data.room, new Set());
    subscribe(data.room); // CHANGED: the room's channel, on its first local member
  }
  rooms.get(data.room).add(ws);
  broadcastEverywhere(data.room, { type: "user_joined", username: data.username }, ws);
}

function handleMessage(ws, data) {
  if (ws.room === undefined) return; // CHANGED: not joined yet (the article would publish to "undefined")
  // The article's multi-node handleMessage, with the single-node version's timestamp.
  publisher.publish(
    channel(ws.room),
    JSON.stringify({ type: "message", username: ws.username, text: data.text, timestamp: Date.now() }),
  );
}

// CHANGED: not shown in the article (it is called there); written in its style.
function handleTyping(ws, data) {
  if (ws.room === undefined) return;
  broadcastEverywhere(ws.room, { type: "typing", username: ws.username }, ws);
}

// CHANGED: not shown in the article (it is called there); forgets the socket and the empty room.
function handleDisconnect(ws) {
  const clients = rooms.get(ws.room);
  if (clients === undefined) return;
  clients.delete(ws);
  if (clients.size === 0) {
    rooms.delete(ws.room);
    subscriber.unsubscribe(channel(ws.room)).catch(() => {});
  }
}

function broadcast(room, data, exclude = null) {
  const clients = rooms.get(room) || new Set();
  const message = JSON.stringify(data);
  clients.forEach((client) => {
    if (client !== exclude && client.readyState === 1) {
      client.send(message);
    }
  });
}

// CHANGED: multi-node plumbing (see the header).
function channel(room) {
  return "chat:" + room;
}

function broadcastEverywhere(room, data, exclude) {
  broadcast(room, data, exclude);
  publisher.publish(channel(room), ORIGIN + JSON.stringify(data));
}

function subscribe(room) {
  // As in the article, nothing waits for the subscription: a message published before Redis
  // confirms it does not reach this node (PITFALLS.md, "SUBSCRIBE/PUBLISH race").
  subscriber
    .subscribe(channel(room), (message) => {
      let forward = message;
      if (message.charCodeAt(0) !== 123 /* "{" */) {
        if (message.startsWith(ORIGIN)) return; // already broadcast locally, without the sender
        forward = message.slice(message.indexOf("\t") + 1);
      }
      const localClients = rooms.get(room) || new Set();
      localClients.forEach((client) => {
        if (client.readyState === 1) client.send(forward);
      });
    })
    .catch(() => {});
}

// Heartbeat: clean up dead connections
setInterval(() => {
  wss.clients.forEach((ws) => {
    if (!ws.isAlive) return ws.terminate();
    ws.isAlive = false;
    ws.ping();
  });
}, 30000);

// CHANGED: tell the benchmark where it listens; stop cleanly on SIGTERM.
wss.on("listening", () => {
  console.log(JSON.stringify({ event: "listening", node: NODE_ID, port: wss.address().port }));
});
process.on("SIGTERM", () => process.exit(0));
