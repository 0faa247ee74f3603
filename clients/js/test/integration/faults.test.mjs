// The package through the faults the Python client is tested under (tests/support/python_clients.py):
// readers and steady senders in one room, through nginx, while a node is SIGKILLed and Redis is
// restarted empty. The promise: each send the server acknowledged (with its epoch and offset)
// reaches every client once and in order, or the client gets a `gap` that covers it; nothing
// refused reaches anyone; no hole is found without a notice (`offsets_skipped`), and a restart
// of Redis is told once per client (one `epoch_changed`), never twice, never in silence.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import WebSocket from "ws";
import { RoomcastClient } from "../../dist/index.js";
import { startCluster } from "../support/cluster.mjs";
import { until } from "../support/wait.mjs";

const QUICK_ENV = { ROOMCAST_REDIS_TIMEOUT: "1" }; // nodes give up on a silent Redis after 1 s
const READERS = 3;
const SENDERS = 2;
const INTERVAL_MS = 20;

/** One client in the room: every message and gap its application got, in order. */
class Follower {
  constructor(url, room, username) {
    this.room = room;
    this.events = [];
    this.client = new RoomcastClient(url, username, { WebSocket, rooms: [room], backoff: { base: 100, cap: 1000 } });
    this.client.on("message", (m) => m.room === room && this.events.push(m));
    this.client.on("gap", (g) => g.room === room && this.events.push(g));
    this.client.start();
  }

  delivered() {
    return this.events.filter((e) => e.type === "message").map((m) => `${m.epoch}:${m.offset}`);
  }

  gaps() {
    return this.events.filter((e) => e.type === "gap");
  }

  /** [epoch, first, last] ranges the client was told it will not get. */
  covered() {
    const ranges = [];
    let epoch = "";
    let offset = 0;
    for (const event of this.events) {
      if (event.type === "message") {
        [epoch, offset] = [event.epoch, event.offset];
        continue;
      }
      if (event.reason === "offsets_skipped") continue; // not a notice: a hole the client found
      if (event.epoch !== epoch) {
        ranges.push([epoch, offset + 1, Infinity], [event.epoch, 1, event.offset]);
      } else {
        ranges.push([epoch, offset + 1, event.offset]);
      }
      [epoch, offset] = [event.epoch, event.offset];
    }
    return ranges;
  }

  /** Acknowledged positions neither delivered nor covered by a notice. */
  missing(acked) {
    const seen = new Set(this.delivered());
    const told = this.covered();
    return [...acked.keys()].filter((key) => {
      if (seen.has(key)) return false;
      const [epoch, offset] = [key.slice(0, key.lastIndexOf(":")), Number(key.slice(key.lastIndexOf(":") + 1))];
      return !told.some(([e, first, last]) => e === epoch && first <= offset && offset <= last);
    });
  }
}

async function across(cluster, fault) {
  const room = `js-fault-${randomUUID().slice(0, 8)}`;
  const everyone = [];
  const follow = async (name) => {
    const follower = new Follower(cluster.url, room, name);
    everyone.push(follower);
    await follower.client.join(room);
    return follower;
  };
  try {
    for (let i = 0; i < READERS; i += 1) await follow(`reader${i}`);
    const senders = [];
    for (let i = 0; i < SENDERS; i += 1) senders.push(await follow(`sender${i}`));
    const acked = new Map(); // "epoch:offset" -> text
    const refused = new Set();
    const unconfirmed = new Set();
    const pending = new Set();
    let serial = 0;
    let stopped = false;
    const sendSteadily = async (sender) => {
      while (!stopped) {
        serial += 1;
        const text = `${sender.client.username} ${serial}`;
        const settled = sender.client.send(room, text).then(
          (d) => {
            const key = `${d.epoch}:${d.offset}`;
            assert.ok(!acked.has(key), `two messages acknowledged at ${key}`);
            acked.set(key, text);
          },
          (e) => (e.code === "unconfirmed" ? unconfirmed : refused).add(text),
        );
        pending.add(settled);
        void settled.finally(() => pending.delete(settled));
        await new Promise((resolve) => setTimeout(resolve, INTERVAL_MS));
      }
    };
    const loops = senders.map(sendSteadily);
    const watcher = everyone[0].client;
    let wanted = acked.size + 10;
    await until(watcher, "acks before the fault", () => acked.size >= wanted);
    await fault(senders, everyone);
    wanted = acked.size + 20;
    await until(watcher, "acks after the fault", () => acked.size >= wanted, 40_000);
    stopped = true;
    await Promise.all(loops);
    await Promise.all([...pending]);
    for (const follower of everyone) {
      await until(follower.client, `${follower.client.username}: every acknowledged message or its notice`, () => follower.missing(acked).length === 0, 30_000).catch((error) => {
        const lacking = follower.missing(acked);
        throw new Error(`${error.message}: ${lacking.length} missing in silence, e.g. ${lacking.slice(0, 5)}; gaps ${JSON.stringify(follower.gaps())}`);
      });
    }
    const gaps = everyone.map((f) => f.gaps().map((g) => `${g.reason}@${g.epoch.slice(0, 8)}:${g.offset}`));
    console.log(`confirmed ${acked.size}, refused ${refused.size}, unconfirmed ${unconfirmed.size}; gaps per client ${JSON.stringify(gaps)}`);
    const published = new Map();
    for (const follower of everyone) {
      for (const e of follower.events) if (e.type === "message" && unconfirmed.has(e.text)) published.set(`${e.epoch}:${e.offset}`, e.text);
    }
    for (const follower of everyone) {
      const name = follower.client.username;
      assert.deepEqual(follower.missing(published), [], `${name}: an unconfirmed message published to others, missing here`);
      const delivered = follower.delivered();
      assert.equal(new Set(delivered).size, delivered.length, `${name}: a message delivered twice`);
      const texts = follower.events.filter((e) => e.type === "message").map((m) => m.text);
      assert.deepEqual(texts.filter((t) => refused.has(t)), [], `${name}: a refused message was delivered`);
      assert.equal(new Set(texts).size, texts.length, `${name}: a message published twice`);
      assert.deepEqual(follower.gaps().filter((g) => g.reason === "offsets_skipped"), [], `${name}: a hole nobody announced`);
    }
    return everyone;
  } finally {
    await Promise.all(everyone.map((f) => f.client.close()));
  }
}

/** Each client was told of the room's new epoch once: never twice, never in silence. */
function toldOnce(everyone) {
  for (const follower of everyone) {
    const epochChanges = follower.gaps().filter((g) => g.reason === "epoch_changed");
    assert.equal(epochChanges.length, 1, `${follower.client.username}: ${JSON.stringify(follower.gaps())}`);
  }
}

test("Redis restarted empty under traffic: one epoch_changed gap per client, no silent hole", async () => {
  const cluster = await startCluster({ nodes: 3, env: QUICK_ENV });
  try {
    toldOnce(await across(cluster, () => cluster.restartRedis()));
  } finally {
    await cluster.stop();
  }
});

test("a node SIGKILLed as Redis restarts empty: its clients resume with `since` elsewhere, told once", async () => {
  const cluster = await startCluster({ nodes: 3, env: QUICK_ENV });
  try {
    const killBusiestNodeAndRestartRedis = async (_senders, followers) => {
      // The node most of the room's clients are on (least_conn spreads the five over three).
      const counts = new Map();
      for (const f of followers) counts.set(f.client.node, (counts.get(f.client.node) ?? 0) + 1);
      const busiest = [...counts].sort((a, b) => b[1] - a[1])[0][0];
      cluster.kill(cluster.nodes.find((n) => n.id === busiest));
      await cluster.restartRedis();
    };
    toldOnce(await across(cluster, killBusiestNodeAndRestartRedis));
  } finally {
    await cluster.stop();
  }
});

test("a Sentinel failover under traffic: every acknowledged message arrives or is told", async () => {
  const cluster = await startCluster({ nodes: 3, env: QUICK_ENV, sentinel: true });
  try {
    // Replication is asynchronous: the promoted replica starts a new epoch (docs/guarantees.md).
    toldOnce(await across(cluster, () => cluster.failOver()));
  } finally {
    await cluster.stop();
  }
});
