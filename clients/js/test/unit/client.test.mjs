// The client's state machine against a fake socket: connect, join, resume with `since`,
// de-duplication, the outbox (queue, ack, refusal, bounds), close codes, backoff. No network.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";
import { ClientClosedError, JoinError, RequestError, RoomcastClient, SendError } from "../../dist/index.js";
import { FakeWebSocket, flush, joined, message } from "../support/fake-socket.mjs";

const URL = "ws://roomcast.test/chat";

beforeEach(() => {
  FakeWebSocket.reset();
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: 1_000_000 });
});

afterEach(() => mock.timers.reset());

function client(options = {}) {
  const instance = new RoomcastClient(URL, "ann", { WebSocket: FakeWebSocket, rooms: ["r"], backoff: { base: 500, cap: 8000, random: () => 0.5 }, ...options });
  const events = [];
  instance.onEvent((event) => events.push(event));
  return { client: instance, events, of: (type) => events.filter((e) => e.type === type) };
}

async function connected(c, frames = [joined("r", 0)]) {
  c.start();
  await flush();
  const ws = FakeWebSocket.last.open();
  for (const frame of frames) ws.receive(typeof frame === "function" ? frame(ws) : frame);
  await flush();
  return ws;
}

function joinReply(ws, offset, extra = {}) {
  const join = ws.frames("join").at(-1);
  ws.receive({ ...joined(join.room, offset, extra), id: join.id });
}

test("connects with the roomcast subprotocol and the token, then joins after the welcome", async () => {
  const tokens = ["t1", "t2"];
  const { client: c, of } = client({ token: () => tokens.shift() });
  c.start();
  await flush();
  const ws = FakeWebSocket.last;
  assert.deepEqual(ws.protocols, ["roomcast", "roomcast.token.t1"]);
  assert.equal(c.state, "connecting");
  assert.deepEqual(ws.frames(), [], "nothing before the welcome");
  ws.open();
  assert.equal(c.state, "connected");
  assert.equal(c.node, "node-1");
  const [join] = ws.frames("join");
  assert.equal(join.room, "r");
  assert.equal(join.username, "ann");
  assert.equal(join.since, undefined);
  assert.equal(typeof join.id, "string");
  joinReply(ws, 5);
  assert.equal(of("joined").length, 1);
  assert.deepEqual(c.position("r"), { epoch: "e1", offset: 5 });
  ws.drop(1001, "going away");
  mock.timers.tick(250);
  await flush();
  assert.deepEqual(FakeWebSocket.last.protocols, ["roomcast", "roomcast.token.t2"], "the callback is asked again");
  await c.close();
});

test("rejoins with since after a drop, and delivers every offset once across it", async () => {
  const { client: c, of } = client();
  const ws = await connected(c);
  joinReply(ws, 2);
  for (const offset of [3, 4]) ws.receive(message("r", offset));
  ws.drop(1006);
  assert.equal(c.state, "reconnecting");
  const [reconnecting] = of("reconnecting");
  assert.deepEqual([reconnecting.attempt, reconnecting.delay], [1, 250]);
  assert.equal(of("disconnected")[0].willReconnect, true);
  mock.timers.tick(250);
  await flush();
  const ws2 = FakeWebSocket.last.open();
  assert.deepEqual(ws2.frames("join")[0].since, { epoch: "e1", offset: 4 });
  joinReply(ws2, 6, { recovered: true });
  for (const offset of [4, 5, 6, 6, 7]) ws2.receive(message("r", offset));
  assert.deepEqual(of("message").map((m) => m.offset), [3, 4, 5, 6, 7]);
  assert.equal(c.duplicatesDropped("r"), 2);
  assert.deepEqual(of("resumed").map((e) => e.offset), [4]);
  assert.equal(of("gap").length, 0);
  await c.close();
});

test("a rejoin refused rate_limited is sent again after retry_after plus jitter, with since, on the same connection", async () => {
  const { client: c, of } = client();
  const ws = await connected(c);
  joinReply(ws, 4);
  ws.drop(1006);
  mock.timers.tick(250);
  await flush();
  const ws2 = FakeWebSocket.last.open();
  const refuse = (retryAfter) => {
    const join = ws2.frames("join").at(-1);
    const frame = { type: "error", code: "rate_limited", reason: "too many joins; slow down", room: "r", id: join.id };
    ws2.receive(retryAfter === undefined ? frame : { ...frame, retry_after: retryAfter });
  };
  refuse(2);
  const [first] = of("rejoining");
  // 2 s of the server's hint, plus half of the first backoff bound (500 ms).
  assert.deepEqual([first.room, first.attempt, first.delay, first.code], ["r", 1, 2250, "rate_limited"]);
  assert.equal(of("error").length, 1, "the refusal is still reported");
  assert.deepEqual(c.rooms(), ["r"], "the room is kept");
  assert.equal(c.state, "connected");
  mock.timers.tick(2249);
  await flush();
  assert.equal(ws2.frames("join").length, 1, "not before the delay");
  mock.timers.tick(1);
  assert.equal(ws2.frames("join").length, 2);
  assert.deepEqual(ws2.frames("join")[1].since, { epoch: "e1", offset: 4 });
  refuse(undefined); // no hint: the backoff alone, growing
  assert.deepEqual(of("rejoining").map((e) => [e.attempt, e.delay]), [[1, 2250], [2, 500]]);
  // An application's join() of the room meanwhile waits for the retry rather than sending one.
  const waiting = c.join("r", { timeout: 60_000 });
  assert.equal(ws2.frames("join").length, 2);
  mock.timers.tick(500);
  joinReply(ws2, 6, { recovered: true });
  assert.equal((await waiting).offset, 6);
  assert.deepEqual(of("resumed").map((e) => e.offset), [4]);
  // Joined again: the next refusal starts the backoff over.
  ws2.drop(1006);
  mock.timers.tick(10_000);
  await flush();
  const ws3 = FakeWebSocket.last.open();
  ws3.receive({ type: "error", code: "rate_limited", reason: "slow down", room: "r", id: ws3.frames("join")[0].id, retry_after: 5 });
  const third = of("rejoining").at(-1);
  assert.deepEqual([third.attempt, third.delay], [1, 5250]);
  // The delay outlives the connection: a new one waits out what is left of it.
  mock.timers.tick(400);
  ws3.drop(1006);
  const reconnect = of("reconnecting").at(-1).delay;
  mock.timers.tick(reconnect);
  await flush();
  const ws4 = FakeWebSocket.last;
  assert.notEqual(ws4, ws3);
  ws4.open();
  assert.equal(ws4.frames("join").length, 0, "the refused rejoin's delay is not over");
  mock.timers.tick(5250 - 400 - reconnect - 1);
  assert.equal(ws4.frames("join").length, 0);
  mock.timers.tick(1);
  assert.equal(ws4.frames("join").length, 1);
  await c.close();
  mock.timers.tick(60_000);
  assert.equal(ws4.frames("join").length, 1, "nothing after close()");
});

test("a join() of a new room refused rate_limited rejects with the hint; rooms given at start are retried", async () => {
  const { client: c, of } = client({ rooms: ["kept"] });
  const ws = await connected(c, []);
  const startJoin = ws.frames("join")[0];
  ws.receive({ type: "error", code: "hook_unavailable", reason: "the join hook did not answer", room: "kept", id: startJoin.id });
  assert.deepEqual(of("rejoining").map((e) => [e.room, e.code]), [["kept", "hook_unavailable"]]);
  const asked = c.join("new");
  const join = ws.frames("join").at(-1);
  ws.receive({ type: "error", code: "rate_limited", reason: "too many joins; slow down", room: "new", id: join.id, retry_after: 1.5 });
  await assert.rejects(asked, (e) => e instanceof JoinError && e.error.code === "rate_limited" && e.error.retryAfter === 1500);
  assert.deepEqual(c.rooms(), ["kept"]);
  // A bad hint is ignored, not fatal to the frame.
  ws.receive({ type: "error", code: "rate_limited", reason: "x", retry_after: "soon" });
  assert.equal(of("error").at(-1).retryAfter, null);
  await c.close();
});

test("joins never answered after an unread frame was refused are sent again after requestTimeout", async () => {
  const { client: c, of } = client({ rooms: ["a", "b", "c"], requestTimeout: 5000 });
  const ws = await connected(c, []);
  const [a, b, c3] = ws.frames("join");
  ws.receive({ ...joined("a", 1), id: a.id });
  // The node read "b" but not "c": its refusal names neither.
  ws.receive({ type: "error", code: "rate_limited", reason: "too many frames; slow down" });
  mock.timers.tick(4000);
  ws.receive({ ...joined("b", 1), id: b.id }); // slow, but answered: not sent again
  mock.timers.tick(999);
  assert.equal(ws.frames("join").length, 3);
  mock.timers.tick(1);
  const again = ws.frames("join").slice(3);
  assert.deepEqual(again.map((f) => f.room), ["c"]);
  assert.notEqual(again[0].id, c3.id);
  assert.deepEqual(of("rejoining").map((e) => [e.room, e.delay]), [["c", 0]]);
  ws.receive({ ...joined("c", 1), id: again[0].id });
  assert.deepEqual(["a", "b", "c"].map((r) => c.isJoined(r)), [true, true, true]);
  await c.close();
});

test("a resume that could not recover is a gap, and the cursor moves to the join's offset", async () => {
  const { client: c, of } = client();
  const ws = await connected(c);
  joinReply(ws, 2);
  ws.drop();
  mock.timers.tick(250);
  await flush();
  const ws2 = FakeWebSocket.last.open();
  joinReply(ws2, 90, { recovered: false, reason: "too_old" });
  assert.deepEqual(of("gap").map((g) => [g.reason, g.offset]), [["too_old", 90]]);
  ws2.receive(message("r", 91));
  assert.deepEqual(of("message").map((m) => m.offset), [91]);
  await c.close();
});

test("backoff grows with full jitter and restarts after a stable connection", async () => {
  let draw = 0.5;
  const { client: c, of } = client({ backoff: { base: 500, cap: 4000, random: () => draw }, stableAfter: 10_000 });
  c.start();
  await flush();
  for (let i = 0; i < 5; i += 1) {
    FakeWebSocket.last.drop(1006); // refused before opening
    mock.timers.tick(10_000);
    await flush();
  }
  assert.deepEqual(of("reconnecting").map((e) => e.delay), [250, 500, 1000, 2000, 2000]);
  assert.equal(of("disconnected").length, 0, "never connected: no disconnected event");
  const ws = FakeWebSocket.last.open();
  assert.equal(of("connected").at(-1).attempt, 5);
  mock.timers.tick(10_000);
  draw = 0;
  ws.drop(1006);
  assert.deepEqual(of("reconnecting").at(-1).attempt, 1, "a stable connection resets the exponent");
  assert.equal(c.retryAt, Date.now());
  await c.close();
});

test("the fatal close codes and a refused handshake stop the client until reconnect()", async () => {
  for (const code of [1003, 1007, 1008, 1009]) {
    FakeWebSocket.reset();
    const { client: c, of } = client();
    const ws = await connected(c);
    ws.drop(code, "bye");
    assert.equal(c.state, "offline", String(code));
    assert.equal(of("closed")[0].code, code);
    assert.equal(of("disconnected")[0].willReconnect, false);
    mock.timers.tick(60_000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1, "no retry");
    c.reconnect();
    await flush();
    assert.equal(FakeWebSocket.instances.length, 2);
    await c.close();
  }
  for (const status of [401, 403]) {
    FakeWebSocket.reset();
    const { client: c, of } = client();
    c.start();
    await flush();
    FakeWebSocket.last.refuse(status);
    assert.equal(c.state, "offline");
    assert.equal(of("closed")[0].status, status);
    await assert.rejects(c.history("r"), ClientClosedError);
    await c.close();
  }
  FakeWebSocket.reset();
  const { client: c, of } = client();
  c.start();
  await flush();
  FakeWebSocket.last.refuse(502);
  assert.equal(c.state, "reconnecting", "a 502 is transient");
  assert.equal(of("reconnecting")[0].cause, "HTTP 502");
  await c.close();
});

test("a busy node's 503 is not fatal: the retry waits at least a second, plus the jitter", async () => {
  const { client: c, of } = client();
  c.start();
  await flush();
  FakeWebSocket.last.refuse(503);
  assert.equal(c.state, "reconnecting", "a 503 is transient");
  const [reconnecting] = of("reconnecting");
  assert.equal(reconnecting.cause, "HTTP 503");
  assert.equal(reconnecting.delay, 1000 + 250, "Retry-After's floor plus the backoff's draw");
  const before = FakeWebSocket.instances.length;
  mock.timers.tick(1249);
  await flush();
  assert.equal(FakeWebSocket.instances.length, before, "not before the delay");
  mock.timers.tick(1);
  await flush();
  assert.equal(FakeWebSocket.instances.length, before + 1, "then it tries again");
  await c.close();
});

test("an address's 429 is handled like a 503: at least a second, plus the jitter", async () => {
  const { client: c, of } = client();
  c.start();
  await flush();
  FakeWebSocket.last.refuse(429);
  assert.equal(c.state, "reconnecting");
  assert.deepEqual([of("reconnecting")[0].cause, of("reconnecting")[0].delay], ["HTTP 429", 1250]);
  await c.close();
});

test("send resolves with the ack's offset; a refusal rejects with the server's code", async () => {
  const { client: c, of } = client();
  const ws = await connected(c);
  joinReply(ws, 0);
  const first = c.send("r", "hello");
  const second = c.send("r", "again");
  const [f1, f2] = ws.frames("message");
  assert.deepEqual([f1.text, f1.room, f2.text], ["hello", "r", "again"]);
  assert.deepEqual(c.pending().map((p) => p.status), ["sent", "sent"]);
  ws.receive({ type: "ack", id: f1.id, room: "r", epoch: "e1", offset: 1 });
  ws.receive({ type: "error", code: "rate_limited", reason: "message rate exceeded", room: "r", id: f2.id });
  assert.deepEqual(await first, { id: f1.id, room: "r", epoch: "e1", offset: 1 });
  const error = await second.then(() => null, (e) => e);
  assert.ok(error instanceof SendError);
  assert.equal(error.code, "rate_limited");
  assert.deepEqual(of("send_failed").map((e) => e.reason), ["rate_limited"]);
  assert.deepEqual(c.pending(), []);
  await c.close();
});

test("what is sent offline waits in order and goes out once the room is rejoined", async () => {
  const { client: c } = client();
  const ws = await connected(c);
  joinReply(ws, 0);
  ws.drop();
  const queued = ["one", "two", "three"].map((t) => c.send("r", t));
  assert.deepEqual(c.pending().map((p) => [p.text, p.status]), [["one", "queued"], ["two", "queued"], ["three", "queued"]]);
  mock.timers.tick(250);
  await flush();
  const ws2 = FakeWebSocket.last.open();
  assert.deepEqual(ws2.frames("message"), [], "not before the rejoin");
  joinReply(ws2, 0, { recovered: true });
  assert.deepEqual(ws2.frames("message").map((f) => f.text), ["one", "two", "three"]);
  ws2.frames("message").forEach((f, i) => ws2.receive({ type: "ack", id: f.id, room: "r", epoch: "e1", offset: i + 1 }));
  assert.deepEqual((await Promise.all(queued)).map((d) => d.offset), [1, 2, 3]);
  await c.close();
});

test("the offline queue is bounded in size and in time", async () => {
  const { client: c, of } = client({ maxUnsent: 2, queueTimeout: 5000 });
  await connected(c);
  FakeWebSocket.last.drop();
  const [a, b, over] = ["a", "b", "c"].map((t) => c.send("r", t));
  await assert.rejects(over.delivered, (e) => e.code === "queue_full");
  mock.timers.tick(5000);
  await assert.rejects(a.delivered, (e) => e.code === "expired");
  await assert.rejects(b.delivered, (e) => e.code === "expired");
  assert.deepEqual(of("send_failed").map((e) => e.reason), ["queue_full", "expired", "expired"]);
  assert.equal(c.unsentCount, 0);
  const big = c.send("r", "x".repeat(70_000));
  await assert.rejects(big.delivered, (e) => e.code === "too_big" && /longer than the server accepts \(65536 bytes\)/.test(e.message));
  await c.close();
});

test("a message in flight when the connection died: its echo in the replay confirms it, else it is unconfirmed", async () => {
  const { client: c } = client();
  const ws = await connected(c);
  joinReply(ws, 0);
  const echoed = c.send("r", "made it");
  const lost = c.send("r", "lost");
  ws.drop();
  mock.timers.tick(250);
  await flush();
  const ws2 = FakeWebSocket.last.open();
  joinReply(ws2, 1, { recovered: true });
  ws2.receive(message("r", 1, "made it", { username: "ann" }));
  assert.deepEqual(await echoed, { id: 1, room: "r", epoch: "e1", offset: 1 });
  await assert.rejects(lost.delivered, (e) => e.code === "unconfirmed");
  assert.deepEqual(ws2.frames("message"), [], "never written twice");
  await c.close();
});

test("after a node that names our userId, a resume on an older node (no userId) still confirms our message by its echo", async () => {
  const { client: c } = client();
  c.start();
  await flush();
  const ws = FakeWebSocket.last.open({ type: "welcome", node: "node-new", connection: "c1", user_id: "mine" });
  joinReply(ws, 0);
  const echoed = c.send("r", "made it");
  ws.drop();
  mock.timers.tick(250);
  await flush();
  const ws2 = FakeWebSocket.last.open(); // the previous release's welcome: no user_id
  joinReply(ws2, 1, { recovered: true });
  ws2.receive(message("r", 1, "made it", { username: "ann" })); // its echo, without userId
  assert.deepEqual(await echoed, { id: 1, room: "r", epoch: "e1", offset: 1 });
  await c.close();
});

test("join() waits across reconnects; a refusal rejects and forgets the room", async () => {
  const { client: c } = client({ rooms: [] });
  const waiting = c.join("a");
  await flush();
  const ws = FakeWebSocket.last.open();
  joinReply(ws, 3);
  assert.equal((await waiting).offset, 3);
  const refused = c.join("secret");
  const join = ws.frames("join").at(-1);
  ws.receive({ type: "error", code: "forbidden", reason: "not allowed", room: "secret", id: join.id });
  await assert.rejects(refused, JoinError);
  assert.deepEqual(c.rooms(), ["a"]);
  assert.throws(() => c.send("secret", "x"), /join "secret" before/);
  await c.close();
});

test("history() and presence() are answered by id, wait for the join, and carry refusals", async () => {
  const { client: c } = client();
  c.start();
  const history = c.history("r", 5);
  await flush();
  const ws = FakeWebSocket.last.open();
  joinReply(ws, 1);
  await flush();
  const [request] = ws.frames("history");
  assert.equal(request.limit, 5);
  ws.receive({ type: "history", room: "r", epoch: "e1", offset: 1, messages: [message("r", 1)], id: request.id });
  assert.equal((await history).messages[0].offset, 1);
  const presence = c.presence("r");
  await flush();
  const [asked] = ws.frames("presence");
  ws.receive({ type: "error", code: "unavailable", reason: "presence: redis is down", room: "r", id: asked.id });
  await assert.rejects(presence, (e) => e instanceof RequestError && e.error.code === "unavailable");
  await c.close();
});

test("allMembers() walks a big room's presence page by page, with the cursor of each", async () => {
  const { client: c } = client();
  c.start();
  await flush();
  const ws = FakeWebSocket.last.open();
  joinReply(ws, 1);
  await flush();
  const walked = [];
  const walk = (async () => {
    for await (const member of c.allMembers("r", { page: 2 })) walked.push(member.username);
  })();
  const pages = [["ann", "bob"], ["cid", "dan"], ["eve"]];
  for (const [index, names] of pages.entries()) {
    await flush();
    const asked = ws.frames("presence").at(-1);
    assert.equal(asked.limit, 2);
    assert.equal(asked.after, index === 0 ? undefined : pages[index - 1].at(-1));
    const next = index === pages.length - 1 ? null : names.at(-1);
    const members = names.map((username) => ({ username, connections: 1 }));
    ws.receive({ type: "presence", room: "r", members, total_members: 5, total_connections: 5, next, id: asked.id });
  }
  await walk;
  assert.deepEqual(walked, ["ann", "bob", "cid", "dan", "eve"]);
  assert.equal(ws.frames("presence").length, 3);
  await c.close();
});

test("a loss notice is an event and a gap; the cursor continues after it", async () => {
  const { client: c, of } = client();
  const ws = await connected(c);
  joinReply(ws, 4);
  ws.receive({ type: "loss", room: "r", reason: "too_old", epoch: "e1", from_offset: 5, to_offset: 8 });
  ws.receive(message("r", 9));
  assert.deepEqual(of("loss").map((e) => [e.fromOffset, e.toOffset]), [[5, 8]]);
  assert.deepEqual(of("gap").map((e) => [e.reason, e.offset]), [["too_old", 8]]);
  assert.deepEqual(of("message").map((m) => m.offset), [9]);
  await c.close();
});

test("states: connecting, connected, reconnecting, offline, closed; close() fails what waits", async () => {
  const { client: c, of } = client();
  const ws = await connected(c);
  joinReply(ws, 0);
  ws.drop();
  const waiting = c.send("r", "never");
  c.disconnect("going to the background");
  assert.equal(c.closed.reason, "going to the background");
  mock.timers.tick(30_000);
  await flush();
  assert.equal(FakeWebSocket.instances.length, 1);
  await c.close();
  await assert.rejects(waiting.delivered, (e) => e.code === "stopped");
  assert.deepEqual(of("state").map((e) => e.state), ["connecting", "connected", "reconnecting", "offline", "closed"]);
  assert.throws(() => c.send("r", "x"), ClientClosedError);
});

test("no welcome in time: the attempt is abandoned and retried", async () => {
  const { client: c, of } = client({ openTimeout: 3000 });
  c.start();
  await flush();
  mock.timers.tick(3000);
  assert.equal(FakeWebSocket.last.closedWith.code, 1000);
  assert.equal(of("reconnecting").length, 1);
  await c.close();
});

test("typing is throttled and never sent offline", async () => {
  const { client: c } = client({ typingInterval: 1000 });
  const ws = await connected(c, []);
  assert.equal(c.typing("r"), false, "not joined yet");
  joinReply(ws, 0);
  assert.deepEqual([c.typing("r"), c.typing("r")], [true, false]);
  mock.timers.tick(1000);
  assert.equal(c.typing("r"), true);
  assert.equal(ws.frames("typing").length, 2);
  await c.close();
});

test("a token_expiring notice is answered with a refresh from the token callback", async () => {
  let n = 0;
  const { client: c } = client({ token: () => `token-${++n}` });
  const ws = await connected(c);
  ws.receive({ type: "token_expiring", expires_at: Date.now() + 30_000, closes_at: Date.now() + 60_000 });
  await flush();
  const [refresh] = ws.frames("refresh");
  assert.equal(refresh.token, "token-2");
  await c.close();
});

test("a listener that throws does not break the client", async () => {
  const { client: c, of } = client();
  const reported = [];
  const original = globalThis.reportError;
  globalThis.reportError = (error) => reported.push(error);
  try {
    c.on("message", () => {
      throw new Error("application bug");
    });
    const ws = await connected(c);
    joinReply(ws, 0);
    ws.receive(message("r", 1));
    ws.receive(message("r", 2));
    assert.deepEqual(of("message").map((m) => m.offset), [1, 2]);
    assert.equal(reported.length, 2);
  } finally {
    globalThis.reportError = original;
  }
  await c.close();
});

test("a message restarts the typing interval", async () => {
  const { client: c } = client({ typingInterval: 1000 });
  const ws = await connected(c, []);
  joinReply(ws, 0);
  assert.equal(c.typing("r"), true);
  c.send("r", "done typing");
  assert.equal(c.typing("r"), true, "the next keystroke after a message is announced");
  await c.close();
});

test("close 4001 (token expired): a token callback reconnects with a fresh token, a fixed token stops", async () => {
  const fresh = ["t1", "t2"];
  const renewing = client({ token: () => fresh.shift() });
  const ws = await connected(renewing.client);
  ws.drop(4001, "token expired");
  assert.equal(renewing.client.state, "reconnecting");
  mock.timers.tick(250);
  await flush();
  assert.deepEqual(FakeWebSocket.last.protocols, ["roomcast", "roomcast.token.t2"]);
  await renewing.client.close();

  const fixed = client({ token: "t0" });
  const ws2 = await connected(fixed.client);
  ws2.drop(4001, "token expired");
  assert.equal(fixed.client.state, "offline");
  assert.equal(fixed.of("closed")[0].code, 4001);
  await fixed.client.close();
});

test("isOwn tells our messages by userId, so a namesake's are not ours", async () => {
  const { client: c } = client();
  c.start();
  await flush();
  FakeWebSocket.last.open({ type: "welcome", node: "node-1", connection: "c1", user_id: "mine" });
  await flush();
  assert.equal(c.userId, "mine");
  const ours = { ...message("r", 1, "hi", { username: "ann" }), userId: "mine" };
  const namesake = { ...message("r", 2, "hi", { username: "ann" }), userId: "other" };
  const posted = { ...message("r", 3, "hi", { username: "ann" }), userId: null }; // the server API
  assert.deepEqual([c.isOwn(ours), c.isOwn(namesake), c.isOwn(posted)], [true, false, false]);
  await c.close();
  const older = client().client; // a server that sends no userId: by name
  assert.equal(older.isOwn({ room: "r", username: "ann", userId: null }), true);
  assert.equal(older.isOwn({ room: "r", username: "bob", userId: null }), false);
});
