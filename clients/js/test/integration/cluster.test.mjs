// The package against a real cluster: redis-server, three roomcast nodes and nginx on free
// loopback ports (test/support/cluster.py starts them the way the Python tests do).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";
import { JoinError, RoomcastClient } from "../../dist/index.js";
import { startCluster } from "../support/cluster.mjs";
import { nextEvent, until } from "../support/wait.mjs";

const room = () => `js-${randomUUID().slice(0, 8)}`;
const clients = [];

function connect(url, username, options = {}) {
  const client = new RoomcastClient(url, username, { WebSocket, backoff: { base: 100, cap: 1000 }, ...options });
  clients.push(client);
  return client.start();
}

async function closeAll() {
  await Promise.all(clients.splice(0).map((c) => c.close()));
}

describe("a shared cluster of three nodes behind nginx", () => {
  let cluster;
  before(async () => {
    cluster = await startCluster({ nodes: 3 });
  });
  after(async () => {
    await closeAll();
    await cluster?.stop();
  });

  test("two clients on different nodes: send resolves with the offset both receive", async () => {
    const name = room();
    const [first, second] = cluster.nodes;
    const ann = connect(first.url, "ann", { rooms: [name] });
    const bob = connect(second.url, "bob", { rooms: [name] });
    // join() answers at once for a room already joined: no event can be missed here.
    const [joinedAnn] = await Promise.all([ann.join(name), bob.join(name)]);
    assert.equal(joinedAnn.username, "ann");
    assert.notEqual(ann.node, bob.node);
    const seenByBob = nextEvent(bob, "message");
    const delivered = await ann.send(name, "hello from ann");
    const message = await seenByBob;
    assert.deepEqual([message.offset, message.epoch, message.text, message.username], [delivered.offset, delivered.epoch, "hello from ann", "ann"]);

    const presence = await bob.presence(name);
    assert.deepEqual(presence.members.map((m) => m.username).sort(), ["ann", "bob"]);
    const history = await bob.history(name, 10);
    assert.deepEqual(history.messages.map((m) => m.text), ["hello from ann"]);

    const typing = nextEvent(bob, "typing");
    assert.equal(ann.typing(name), true);
    assert.equal((await typing).username, "ann");

    const left = nextEvent(bob, "user_left", (e) => e.username === "ann");
    await ann.leave(name);
    await left;
    assert.deepEqual(ann.rooms(), []);
  });

  test("through nginx, with a token callback: every message of a burst is acknowledged in order", async () => {
    const name = room();
    const calls = [];
    const sender = connect(cluster.url, "sender", { rooms: [name], token: () => (calls.push(1), null) });
    await sender.join(name);
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => sender.send(name, `burst ${i}`)));
    const offsets = results.map((r) => r.offset);
    assert.deepEqual(offsets, Array.from({ length: 50 }, (_, i) => offsets[0] + i));
    assert.equal(calls.length, 1);
    await until(sender, "every echo", () => sender.position(name)?.offset === offsets.at(-1));
    assert.equal(sender.duplicatesDropped(name), 0);
  });

  test("a refused join rejects join() with the server's code; the connection stays up", async () => {
    const client = connect(cluster.url, "carol");
    await client.waitConnected();
    await assert.rejects(client.join("no spaces allowed"), (e) => e instanceof JoinError && e.error.code === "invalid_room");
    assert.equal(client.state, "connected");
    assert.equal((await client.join(room())).username, "carol");
  });
});

test("a node SIGKILLed mid-stream: the reader gets every message exactly once, in order", async () => {
  const cluster = await startCluster({ nodes: 3 });
  try {
    const name = room();
    const reader = connect(cluster.url, "reader", { rooms: [name] });
    await reader.join(name);
    const doomed = cluster.nodes.find((n) => n.id === reader.node);
    const received = [];
    reader.on("message", (m) => received.push(m));
    const gaps = [];
    reader.on("gap", (g) => gaps.push(g));
    const resumed = nextEvent(reader, "resumed", () => true, 30_000);

    // Three senders through nginx (one may share the reader's node and ride out the kill too).
    const senders = ["s1", "s2", "s3"].map((n) => connect(cluster.url, n, { rooms: [name] }));
    await Promise.all(senders.map((s) => s.join(name)));
    const PER_SENDER = 30;
    const outcomes = [];
    const sending = senders.map(async (sender, index) => {
      for (let i = 0; i < PER_SENDER; i += 1) {
        const text = `s${index + 1}-${String(i).padStart(2, "0")}`;
        const outgoing = sender.send(name, text);
        outcomes.push(outgoing.then((d) => ({ text, ...d }), (e) => ({ text, failed: e.code })));
        await new Promise((resolve) => setTimeout(resolve, 15));
      }
    });
    await until(reader, "the first messages", () => received.length >= 20);
    cluster.kill(doomed);
    await Promise.all(sending);
    const settled = await Promise.all(outcomes);
    await resumed;
    assert.notEqual(reader.node, doomed.id);

    // The room's stream as the server stored it, read by a fresh client.
    const auditor = connect(cluster.url, "auditor", { rooms: [name] });
    const stored = (await auditor.history(name)).messages;
    await until(reader, "the whole stream", () => received.length >= stored.length, 30_000);
    const asPairs = (messages) => messages.map((m) => `${m.offset}:${m.text}`);
    assert.deepEqual(asPairs(received), asPairs(stored), "exactly once, in order");
    assert.deepEqual(stored.map((m) => m.offset), stored.map((_, i) => stored[0].offset + i), "no hole");
    assert.deepEqual(gaps, []);
    // Every acknowledged send is in the stream at its offset; refused or unconfirmed ones are
    // there at most once (never twice: the client writes a message once).
    const byText = new Map(stored.map((m) => [m.text, m]));
    for (const outcome of settled) {
      if (outcome.failed === undefined) assert.equal(byText.get(outcome.text)?.offset, outcome.offset, outcome.text);
      else assert.ok(["unconfirmed", "unavailable"].includes(outcome.failed), `${outcome.text}: ${outcome.failed}`);
    }
    assert.equal(new Set(stored.map((m) => m.text)).size, stored.length, "no text twice");
    assert.ok(settled.filter((o) => o.failed === undefined).length >= PER_SENDER * 2, "most sends went through");
  } finally {
    await closeAll();
    await cluster.stop();
  }
});

test("tokens: the token's name is used; a bad token stops the client with HTTP 401", async () => {
  const secret = randomUUID().replaceAll("-", "") + randomUUID().replaceAll("-", "");
  const cluster = await startCluster({
    nodes: 1,
    env: { ROOMCAST_AUTH_SECRET: secret },
    tokens: [{ sub: "u-ann", name: "Ann", rooms: ["team-*"] }],
  });
  try {
    const [token] = cluster.tokens;
    const ann = connect(cluster.url, "someone-else", { token: async () => token });
    const joined = await ann.join("team-web");
    assert.equal(joined.username, "Ann");
    await assert.rejects(ann.join("elsewhere"), (e) => e.error.code === "forbidden");

    const intruder = connect(cluster.url, "mallory", { token: "not-a-token" });
    const closed = await nextEvent(intruder, "closed");
    assert.equal(closed.status, 401);
    assert.equal(intruder.state, "offline");
    const anonymous = connect(cluster.url, "anon");
    assert.equal((await nextEvent(anonymous, "closed")).status, 401);
  } finally {
    await closeAll();
    await cluster.stop();
  }
});
