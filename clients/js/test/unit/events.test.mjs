import assert from "node:assert/strict";
import { test } from "node:test";
import { parseEvent } from "../../dist/index.js";

test("every server frame becomes a typed event with camelCase fields", () => {
  assert.deepEqual(parseEvent('{"type":"welcome","node":"n","connection":"c","max_rooms":16,"max_frame_bytes":65536}'), {
    type: "welcome", node: "n", connection: "c", maxRooms: 16, maxFrameBytes: 65536, userId: null,
  });
  assert.equal(parseEvent('{"type":"welcome","node":"n","connection":"c","user_id":"me"}').userId, "me");
  assert.deepEqual(parseEvent('{"type":"joined","room":"r","username":"u","epoch":"e","offset":3,"recovered":false,"reason":"too_old"}'), {
    type: "joined", room: "r", username: "u", epoch: "e", offset: 3, recovered: false, reason: "too_old", already: false, role: null, big: false, connections: null, userId: null, id: null,
  });
  assert.equal(parseEvent('{"type":"joined","room":"r","username":"u","epoch":"e","offset":3,"user_id":"me"}').userId, "me");
  assert.equal(parseEvent('{"type":"joined","room":"r","username":"u","epoch":"e","offset":3,"role":"moderator"}').role, "moderator");
  assert.equal(parseEvent('{"type":"joined","room":"r","already":true}').already, true);
  assert.deepEqual(parseEvent('{"type":"ack","id":4,"room":"r","epoch":"e","offset":9}'), { type: "ack", id: 4, room: "r", epoch: "e", offset: 9 });
  assert.deepEqual(parseEvent('{"type":"error","code":"rate_limited","reason":"slow down","room":"r","id":"x"}'), {
    type: "error", code: "rate_limited", reason: "slow down", room: "r", id: "x", retryAfter: null,
  });
  // A join over its rate says when it would pass, in seconds: milliseconds here.
  assert.equal(parseEvent('{"type":"error","code":"rate_limited","reason":"r","room":"r","retry_after":0.25}').retryAfter, 250);
  for (const bad of ['"1"', "-1", "true", "null"]) {
    assert.equal(parseEvent(`{"type":"error","code":"rate_limited","reason":"r","retry_after":${bad}}`).retryAfter, null, bad);
  }
  // From a server that sends no user ids: none.
  assert.deepEqual(parseEvent('{"type":"presence","room":"r","members":[{"username":"a","connections":2}],"id":"q1"}'), { type: "presence", room: "r", members: [{ username: "a", connections: 2, userIds: {} }], totalMembers: null, totalConnections: null, next: null, id: "q1" });
  // Big rooms: a page of presence, the coalesced presence_changed, and joined's size.
  assert.deepEqual(parseEvent('{"type":"presence","room":"r","members":[{"username":"a","connections":1,"user_ids":{"id-a":1}}],"total_members":9,"total_connections":12,"next":"a"}'), {
    type: "presence", room: "r", members: [{ username: "a", connections: 1, userIds: { "id-a": 1 } }], totalMembers: 9, totalConnections: 12, next: "a", id: null,
  });
  assert.deepEqual(parseEvent('{"type":"presence_changed","room":"r","joined":40,"left":2,"connections":700,"big":true}'), {
    type: "presence_changed", room: "r", joined: 40, left: 2, connections: 700, big: true,
  });
  const big = parseEvent('{"type":"joined","room":"r","username":"u","epoch":"e","offset":3,"big":true,"connections":700}');
  assert.equal(big.big, true);
  assert.equal(big.connections, 700);
  const history = parseEvent('{"type":"history","room":"r","epoch":"e","offset":1,"messages":[{"type":"message","room":"r","username":"a","text":"t","timestamp":5,"offset":1,"epoch":"e"}]}');
  assert.equal(history.messages[0].text, "t");
  assert.equal(history.messages[0].userId, null); // from a server that sends none
  const authored = parseEvent('{"type":"message","room":"r","username":"a","text":"t","timestamp":5,"user_id":"id-a","offset":1,"epoch":"e"}');
  assert.equal(authored.userId, "id-a");
  assert.deepEqual(parseEvent('{"type":"loss","room":"r","reason":"epoch_changed","epoch":"e","from_offset":4,"to_offset":null,"new_epoch":"f"}'), {
    type: "loss", room: "r", reason: "epoch_changed", epoch: "e", fromOffset: 4, toOffset: null, newEpoch: "f",
  });
  // The server API's events, and a deleted message's tombstone.
  assert.deepEqual(parseEvent('{"type":"disconnect","reason":"bye","reconnect":false}'), { type: "disconnect", reason: "bye", reconnect: false });
  assert.deepEqual(parseEvent('{"type":"removed","room":"r","reason":"off topic"}'), { type: "removed", room: "r", reason: "off topic" });
  assert.deepEqual(parseEvent('{"type":"banned","room":"r","reason":"spam","until":99}'), { type: "banned", room: "r", reason: "spam", until: 99 });
  assert.deepEqual(parseEvent('{"type":"message_deleted","room":"r","epoch":"e","offset":2}'), { type: "message_deleted", room: "r", epoch: "e", offset: 2 });
  assert.deepEqual(parseEvent('{"type":"history_cleared","room":"r","epoch":"e","up_to_offset":7}'), { type: "history_cleared", room: "r", epoch: "e", upToOffset: 7 });
  assert.deepEqual(parseEvent('{"type":"message","room":"r","offset":2,"epoch":"e","deleted":true}'), {
    type: "message", room: "r", username: "", text: "", timestamp: 0, offset: 2, epoch: "e", userId: null, deleted: true,
  });
  assert.equal(history.messages[0].deleted, false);
  for (const kind of ["user_joined", "user_left", "typing"]) {
    assert.deepEqual(parseEvent(`{"type":"${kind}","room":"r","username":"a"}`), { type: kind, room: "r", username: "a", userId: null });
    assert.deepEqual(parseEvent(`{"type":"${kind}","room":"r","username":"a","user_id":"id-a"}`), { type: kind, room: "r", username: "a", userId: "id-a" });
  }
});

test("a presence entry tells namesakes apart: each user_id under the name with its connections", () => {
  const joined = parseEvent('{"type":"user_joined","room":"r","username":"alice","user_id":"id-2"}');
  const answer = parseEvent('{"type":"presence","room":"r","members":[{"username":"alice","connections":4,"user_ids":{"id-1":1,"id-2":2}}]}');
  const [alice] = answer.members;
  assert.equal(alice.connections, 4); // one of them written by a node of a release before ids
  assert.deepEqual(alice.userIds, { "id-1": 1, "id-2": 2 });
  assert.ok(Object.hasOwn(alice.userIds, joined.userId));
  for (const bad of ['["id-1"]', '{"id-1":"1"}', '{"id-1":1.5}', '"id-1"']) {
    const event = parseEvent(`{"type":"presence","room":"r","members":[{"username":"a","connections":1,"user_ids":${bad}}]}`);
    assert.equal(event.type, "unknown", bad);
  }
});

test("nothing it cannot read throws: it becomes an unknown event with the raw text", () => {
  for (const raw of ["not json", "[1,2]", "null", '"text"', '{"no":"type"}', '{"type":"message","room":"r"}', '{"type":"ack","room":"r","epoch":"e","offset":1}', '{"type":"newer_server_event","x":1}', '{"type":"message","room":"r","username":"a","text":"t","timestamp":1,"offset":1.5,"epoch":"e"}']) {
    const event = parseEvent(raw);
    assert.equal(event.type, "unknown", raw);
    assert.equal(event.raw, raw);
  }
  assert.equal(parseEvent('{"type":"newer_server_event"}').frameType, "newer_server_event");
  assert.equal(parseEvent('{"type":"__proto__"}').type, "unknown");
});
