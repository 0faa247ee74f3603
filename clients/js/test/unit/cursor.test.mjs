import assert from "node:assert/strict";
import { test } from "node:test";
import { RoomCursor } from "../../dist/index.js";
import { joined as joinedFrame, message } from "../support/fake-socket.mjs";

// As parseEvent gives it.
const joined = (room, offset, extra = {}) => ({ recovered: null, reason: null, already: false, ...joinedFrame(room, offset), ...extra });

test("every offset is delivered once: repeats and older ones are dropped and counted", () => {
  const cursor = new RoomCursor("r");
  const delivered = [];
  for (const offset of [1, 2, 2, 3, 1, 4, 4]) {
    const [deliver, gap] = cursor.accept(message("r", offset));
    assert.equal(gap, null);
    if (deliver) delivered.push(offset);
  }
  assert.deepEqual(delivered, [1, 2, 3, 4]);
  assert.equal(cursor.duplicatesDropped, 3);
  assert.deepEqual(cursor.since(), { epoch: "e1", offset: 4 });
});

test("a hole in the offsets and a new epoch are reported as gaps", () => {
  const cursor = new RoomCursor("r");
  cursor.accept(message("r", 1));
  const [deliver, gap] = cursor.accept(message("r", 5));
  assert.ok(deliver);
  assert.deepEqual(gap, { type: "gap", room: "r", reason: "offsets_skipped", epoch: "e1", offset: 1 });
  const [, epochGap] = cursor.accept(message("r", 1, "x", { epoch: "e2" }));
  assert.equal(epochGap.reason, "epoch_changed");
  assert.deepEqual(cursor.since(), { epoch: "e2", offset: 1 });
});

test("a join moves the cursor; a resume says whether the stream stayed whole", () => {
  const cursor = new RoomCursor("r");
  assert.equal(cursor.since(), null);
  assert.equal(cursor.onJoined(joined("r", 7)), null);
  assert.deepEqual(cursor.since(), { epoch: "e1", offset: 7 });
  const resumed = cursor.onJoined(joined("r", 9, { recovered: true }));
  assert.deepEqual(resumed, { type: "resumed", room: "r", epoch: "e1", offset: 7 });
  assert.deepEqual(cursor.since(), { epoch: "e1", offset: 7 }, "the replay brings 8 and 9");
  const gap = cursor.onJoined(joined("r", 40, { recovered: false, reason: "too_old" }));
  assert.deepEqual(gap, { type: "gap", room: "r", reason: "too_old", epoch: "e1", offset: 40 });
});

test("a loss notice moves the cursor past the lost offsets or into the new epoch", () => {
  const cursor = new RoomCursor("r");
  cursor.accept(message("r", 3));
  const lost = { type: "loss", room: "r", reason: "too_old", epoch: "e1", fromOffset: 4, toOffset: 6, newEpoch: null };
  assert.equal(cursor.onLoss(lost).reason, "too_old");
  assert.deepEqual(cursor.accept(message("r", 7)), [true, null], "no second gap for 4..6");
  const open = { ...lost, reason: "unavailable", fromOffset: 8, toOffset: null };
  assert.ok(cursor.onLoss(open));
  assert.deepEqual(cursor.accept(message("r", 12)), [true, null], "the next message ends the hole");
  const epoch = { ...lost, reason: "epoch_changed", fromOffset: 13, toOffset: null, newEpoch: "e2" };
  assert.equal(cursor.onLoss(epoch).epoch, "e2");
  assert.deepEqual(cursor.accept(message("r", 1, "x", { epoch: "e2" })), [true, null]);
  assert.equal(cursor.onLoss({ ...epoch, epoch: "e0" }), null, "about an epoch already left");
});

test("after an epoch change to a new epoch without messages yet, a rejoin resumes from the old position", () => {
  // Before, since() was null there: the rejoin was a plain join, and the messages the new epoch
  // got meanwhile were skipped without a gap (tests/integration/test_faultteam9_client_epoch_unknown.py).
  const cursor = new RoomCursor("r");
  cursor.accept(message("r", 13));
  const unknown = { type: "loss", room: "r", reason: "epoch_changed", epoch: "e1", fromOffset: 14, toOffset: null, newEpoch: null };
  assert.deepEqual(cursor.onLoss(unknown), { type: "gap", room: "r", reason: "epoch_changed", epoch: "", offset: 0 });
  assert.deepEqual(cursor.since(), { epoch: "e1", offset: 13 });
  assert.deepEqual(cursor.onLoss({ ...unknown, epoch: "", fromOffset: 1 }).epoch, "", "a second restart");
  assert.deepEqual(cursor.since(), { epoch: "e1", offset: 13 });
  const gap = cursor.onJoined(joined("r", 5, { epoch: "e2", recovered: false, reason: "epoch_changed" }));
  assert.deepEqual(gap, { type: "gap", room: "r", reason: "epoch_changed", epoch: "e2", offset: 5 });
  assert.deepEqual(cursor.since(), { epoch: "e2", offset: 5 });
});

test("after an epoch change to a new epoch without messages yet, its first message live ends the wait", () => {
  const cursor = new RoomCursor("r");
  cursor.accept(message("r", 13));
  cursor.onLoss({ type: "loss", room: "r", reason: "epoch_changed", epoch: "e1", fromOffset: 14, toOffset: null, newEpoch: null });
  assert.deepEqual(cursor.accept(message("r", 1, "x", { epoch: "e2" })), [true, null]);
  assert.deepEqual(cursor.since(), { epoch: "e2", offset: 1 });
});

test("a loss in the epoch the room started over in, before any of its messages, is a gap", () => {
  // The server's catch-up of the new epoch gave up (Redis unreachable), then adopted its offset 3
  // with an "unavailable" notice for 1..2. Before, the cursor (epoch null) dropped the notice and
  // took offset 3 as the epoch's first message: 1 and 2 lost without a gap.
  const cursor = new RoomCursor("r");
  cursor.accept(message("r", 3));
  cursor.onLoss({ type: "loss", room: "r", reason: "epoch_changed", epoch: "e1", fromOffset: 4, toOffset: null, newEpoch: null });
  const lost = { type: "loss", room: "r", reason: "unavailable", epoch: "e2", fromOffset: 1, toOffset: 2, newEpoch: null };
  assert.deepEqual(cursor.onLoss(lost), { type: "gap", room: "r", reason: "unavailable", epoch: "e2", offset: 2 });
  assert.deepEqual(cursor.accept(message("r", 3, "x", { epoch: "e2" })), [true, null]);
  assert.deepEqual(cursor.since(), { epoch: "e2", offset: 3 });
});

test("a notice back into an epoch left before resumes after what was delivered in it", () => {
  // Sentinel promoted a server that had lost the room, then one still holding its old epoch.
  const cursor = new RoomCursor("r");
  for (const offset of [1, 2, 3]) cursor.accept(message("r", offset));
  const away = { type: "loss", room: "r", reason: "epoch_changed", epoch: "e1", fromOffset: 4, toOffset: null, newEpoch: null };
  cursor.onLoss(away);
  assert.deepEqual(cursor.accept(message("r", 1, "x", { epoch: "e2" })), [true, null]);
  const back = { type: "loss", room: "r", reason: "epoch_changed", epoch: "e2", fromOffset: 2, toOffset: null, newEpoch: "e1" };
  assert.deepEqual(cursor.onLoss(back), { type: "gap", room: "r", reason: "epoch_changed", epoch: "e1", offset: 3 });
  assert.deepEqual(cursor.accept(message("r", 4)), [true, null], "no offsets_skipped gap");
  assert.deepEqual(cursor.accept(message("r", 3)), [false, null], "nothing twice");
});
