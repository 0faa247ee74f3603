// Many clients of one address (127.0.0.1, an office behind NAT) come back at once after their
// node is SIGKILLed, and the node's per-address limits refuse some of them: handshakes with 429,
// rejoins with `rate_limited` + `retry_after`. Every client must come back by itself, resume with
// `since` and miss nothing (checked by offset), without hammering. Real redis-server, two nodes
// and nginx (tests/integration/test_client_rejoin_storm.py is the same scenario in Python).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import WebSocket from "ws";
import { RoomcastClient } from "../../dist/index.js";
import { FACTOR, startCluster } from "../support/cluster.mjs";
import { until } from "../support/wait.mjs";

const CLIENTS = 40; // through nginx over two nodes: about half of them on the node that dies
const JOIN_RATE = 2; // the address's joins per second (a leave spends one token), burst:
const JOIN_BURST = 4;
const LEAVER_ROOMS = 12; // left one by one by one user of the address: 4 before the kill, 8 after
const ENV = {
  ROOMCAST_HISTORY_SIZE: "1000", // the outage's messages stay in history for the resume
  ROOMCAST_CLIENT_JOIN_RATE_PER_SECOND: String(JOIN_RATE),
  ROOMCAST_CLIENT_JOIN_RATE_BURST: String(JOIN_BURST),
  // Handshakes of the address: fewer than the clients that come back at once.
  ROOMCAST_ADMISSION_PER_ADDRESS_RATE_PER_SECOND: "10",
  ROOMCAST_ADMISSION_PER_ADDRESS_BURST: "8",
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function track(client) {
  const seen = { messages: [], joined: [], rejoining: [], reconnecting: [], gaps: [], all: [] };
  client.onEvent((event) => {
    seen.all.push(event);
    if (event.type === "message") seen.messages.push(event);
    else if (event.type === "joined") seen.joined.push(event);
    else if (event.type === "rejoining") seen.rejoining.push(event);
    else if (event.type === "reconnecting") seen.reconnecting.push(event);
    else if (event.type === "gap") seen.gaps.push(event);
  });
  return seen;
}

test("a reconnect storm of one address, refused for a while: every client resumes with nothing lost", async () => {
  const cluster = await startCluster({ nodes: 2, env: ENV });
  const room = `storm-${randomUUID().slice(0, 8)}`;
  const clients = [];
  const open = (url, name, options = {}) => {
    const client = new RoomcastClient(url, name, { WebSocket, backoff: { base: 200, cap: 2000 }, ...options });
    clients.push(client);
    return client;
  };
  try {
    const members = [];
    for (let i = 0; i < CLIENTS; i += 1) {
      const client = open(cluster.url, `c${i}`, { rooms: [room], requestTimeout: 20_000 * FACTOR });
      const seen = track(client);
      client.start();
      await client.join(room); // one at a time: the handshakes stay near the address's rate
      members.push({ client, seen, start: seen.joined.at(-1).offset });
    }
    const count = (node) => members.filter((m) => m.client.node === node.id).length;
    const victim = cluster.nodes.reduce((a, b) => (count(b) > count(a) ? b : a));
    const survivor = cluster.nodes.find((n) => n !== victim);
    const doomed = members.filter((m) => m.client.node === victim.id);
    assert.ok(doomed.length >= 8, `only ${doomed.length} clients on the victim`);

    // The sender and the leaver are on the survivor (so is the address's join bucket).
    const sender = open(survivor.url, "sender", { rooms: [room] }).start();
    const leaver = open(survivor.url, "leaver").start();
    await sender.join(room);
    const parting = Array.from({ length: LEAVER_ROOMS }, (_, i) => `${room}-away-${i}`);
    for (const name of parting) await leaver.join(name); // joins spend nothing of the bucket
    for (const name of parting.slice(0, JOIN_BURST)) await leaver.leave(name); // leaves do: empty

    const sent = [];
    const stream = (async () => {
      for (let seq = 0; seq < 100; seq += 1) {
        sent.push(await sender.send(room, `m${seq}`));
        await sleep(40);
      }
    })();
    await sleep(300); // the kill lands mid-stream
    const mark = new Map(members.map((m) => [m, m.seen.all.length]));
    cluster.kill(victim);
    for (const name of parting.slice(JOIN_BURST)) {
      await sleep(1000 / JOIN_RATE); // one leave per token the bucket earns: empty for 4 s
      await leaver.leave(name);
    }
    await stream;
    const last = sent.at(-1).offset;
    for (const { client, seen } of members) {
      await until(client, "the whole stream", () => seen.messages.at(-1)?.offset >= last, 60_000);
    }

    for (const { client, seen, start } of members) {
      // Every message once, in order, from the client's first join to the end.
      const offsets = seen.messages.map((m) => m.offset);
      assert.deepEqual(offsets, Array.from({ length: last - start }, (_, i) => start + 1 + i));
      assert.deepEqual(seen.gaps, []);
      assert.deepEqual(client.position(room), { epoch: sent.at(-1).epoch, offset: last });
    }
    for (const { client, seen } of doomed) {
      assert.equal(client.node, survivor.id);
      const rejoin = seen.joined.filter((j) => j.recovered !== null);
      assert.equal(rejoin.at(-1)?.recovered, true, "resumed with since");
    }
    const afterKill = doomed.flatMap((m) => m.seen.all.slice(mark.get(m)));
    const rejoining = afterKill.filter((e) => e.type === "rejoining");
    const refused429 = afterKill.filter((e) => e.type === "reconnecting" && e.cause === "HTTP 429");
    // Refusals really happened, of both kinds.
    assert.ok(rejoining.length > 0, "no rejoin was refused: the test proves nothing");
    assert.ok(rejoining.every((e) => e.code === "rate_limited" && e.room === room));
    assert.ok(refused429.length > 0, "no handshake was refused");
    // Without hammering: a 429 waits at least a second, a refused rejoin the node's hint.
    assert.ok(refused429.every((e) => e.delay >= 1000));
    const worst = Math.max(...doomed.map((m) => m.seen.rejoining.length));
    assert.ok(worst <= 12, `a client was refused ${worst} times`);
    for (const { seen } of members.filter((m) => !doomed.includes(m))) assert.deepEqual(seen.rejoining, []);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await cluster.stop();
  }
});

test("rejoins refused unread over the address's receive budget are sent again until every room is joined", async () => {
  // 4 KiB at once, then 1 KiB/s, each frame 1 KiB more than its bytes: 3 joins at once; the node
  // refuses the next frames unread (`rate_limited` naming no room) and never answers them.
  const cluster = await startCluster({
    nodes: 1,
    env: { ROOMCAST_MAX_FRAME_BYTES: "256", ROOMCAST_CLIENT_RECEIVE_BYTES_BURST: "4096", ROOMCAST_CLIENT_RECEIVE_BYTES_PER_SECOND: "1024" },
  });
  const rooms = Array.from({ length: 6 }, (_, i) => `budget-${randomUUID().slice(0, 6)}-${i}`);
  const client = new RoomcastClient(cluster.nodes[0].url, "ann", { WebSocket, rooms, requestTimeout: 1000 });
  const seen = track(client);
  try {
    client.start();
    await until(client, "the six rooms", () => rooms.every((r) => client.isJoined(r)), 40_000);
    const unnamed = seen.all.filter((e) => e.type === "error" && e.room === null);
    assert.ok(unnamed.length > 0 && unnamed.every((e) => e.code === "rate_limited"));
    assert.ok(seen.rejoining.length > 0 && seen.rejoining.every((e) => e.reason.startsWith("no answer to the join")));
    assert.equal(seen.all.filter((e) => e.type === "connected").length, 1, "the same connection all along");
  } finally {
    await client.close();
    await cluster.stop();
  }
});
