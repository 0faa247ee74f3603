// Built from clients/js/src by `make js-bundle` (npm run build): do not edit by hand.

// src/backoff.ts
var Backoff = class {
  base;
  cap;
  #random;
  constructor({ base = 500, cap = 3e4, random = Math.random } = {}) {
    if (!(base > 0 && base <= cap)) {
      throw new RangeError(`need 0 < base <= cap, got base=${base} cap=${cap}`);
    }
    this.base = base;
    this.cap = cap;
    this.#random = random;
  }
  /** The largest delay before attempt `attempt` (1: the first retry), in milliseconds. */
  bound(attempt) {
    if (attempt < 1) return 0;
    return Math.min(this.cap, this.base * 2 ** Math.min(attempt - 1, 60));
  }
  /** A delay drawn uniformly in [0, bound(attempt)), in milliseconds. */
  delay(attempt) {
    return this.#random() * this.bound(attempt);
  }
};

// src/codes.ts
var ErrorCode = {
  INVALID_UTF8: "invalid_utf8",
  INVALID_JSON: "invalid_json",
  INVALID_FRAME: "invalid_frame",
  UNKNOWN_TYPE: "unknown_type",
  INVALID_ROOM: "invalid_room",
  INVALID_USERNAME: "invalid_username",
  INVALID_TEXT: "invalid_text",
  INVALID_SINCE: "invalid_since",
  INVALID_LIMIT: "invalid_limit",
  NOT_JOINED: "not_joined",
  TOO_MANY_ROOMS: "too_many_rooms",
  FORBIDDEN: "forbidden",
  RATE_LIMITED: "rate_limited",
  UNAVAILABLE: "unavailable",
  UNCONFIRMED: "unconfirmed",
  INVALID_TOKEN: "invalid_token",
  BANNED: "banned",
  INVALID_ROOM_TOKEN: "invalid_room_token",
  BINARY_FRAME: "binary_frame",
  FRAME_TOO_BIG: "frame_too_big",
  FLOOD: "flood",
  SLOW_CONSUMER: "slow_consumer",
  PROTOCOL_VIOLATION: "protocol_violation",
  TOO_MANY_FRAGMENTS: "too_many_fragments",
  ORIGIN: "origin",
  TOKEN_MISSING: "token_missing",
  TOKEN_EXPIRED: "token_expired",
  TOKEN_NOT_YET_VALID: "token_not_yet_valid",
  TOKEN_AUDIENCE: "token_audience",
  TOKEN_ISSUER: "token_issuer",
  TOKEN_SIGNATURE: "token_signature",
  TOKEN_INVALID: "token_invalid",
  TOKEN_NAME: "token_name",
  API_KEY_INVALID: "api_key_invalid",
  TOKENS_OFF: "tokens_off",
  DUPLICATE_HEADER: "duplicate_header",
  MALFORMED_HEADER: "malformed_header",
  MALFORMED_QUERY: "malformed_query",
  DUPLICATE_TOKEN: "duplicate_token",
  MALFORMED_REQUEST: "malformed_request",
  INVALID_REQUEST: "invalid_request",
  NOT_FOUND: "not_found",
  METHOD_NOT_ALLOWED: "method_not_allowed",
  NOT_IN_HISTORY: "not_in_history",
  INVALID_CURSOR: "invalid_cursor",
  INVALID_USER: "invalid_user",
  INVALID_BODY: "invalid_body",
  UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
  INTERNAL_ERROR: "internal_error",
  JOIN_DENIED: "join_denied",
  PUBLISH_DENIED: "publish_denied",
  CONNECT_DENIED: "connect_denied",
  HOOK_UNAVAILABLE: "hook_unavailable"
};
var CloseCode = {
  NORMAL: 1e3,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED_DATA: 1003,
  ABNORMAL: 1006,
  INVALID_DATA: 1007,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  TRY_AGAIN_LATER: 1013,
  /** The token ran out (exp + leeway) without a `refresh`: reconnect with a fresh one. */
  TOKEN_EXPIRED: 4001,
  /** The application disconnected this user (server API): reconnecting is allowed. */
  DISCONNECTED: 4002,
  /** The application disconnected this user and said not to come back: the client stops. */
  DISCONNECTED_FOR_GOOD: 4003
};
var FATAL_CLOSE_CODES = /* @__PURE__ */ new Map([
  [CloseCode.UNSUPPORTED_DATA, "the server refused a binary frame"],
  [CloseCode.INVALID_DATA, "the server received invalid UTF-8"],
  [CloseCode.POLICY_VIOLATION, "too many frames were sent (flood protection)"],
  [CloseCode.MESSAGE_TOO_BIG, "a frame was over the server's size limit"],
  [CloseCode.DISCONNECTED_FOR_GOOD, "the application disconnected you"]
]);
var FATAL_HTTP_STATUSES = /* @__PURE__ */ new Set([401, 403]);
var BUSY_HTTP_STATUSES = /* @__PURE__ */ new Set([429, 503]);
var BUSY_RETRY_MS = 1e3;
var RETRIED_JOIN_ERRORS = /* @__PURE__ */ new Set([ErrorCode.RATE_LIMITED, ErrorCode.HOOK_UNAVAILABLE]);
var RecoveryStatus = {
  RECOVERED: "recovered",
  EPOCH_CHANGED: "epoch_changed",
  TOO_OLD: "too_old",
  OVERLOADED: "overloaded",
  NOT_REQUESTED: "not_requested"
};
var LossReason = {
  EPOCH_CHANGED: "epoch_changed",
  TOO_OLD: "too_old",
  UNAVAILABLE: "unavailable"
};

// src/cursor.ts
var LEFT_EPOCHS_KEPT = 4;
var RoomCursor = class {
  room;
  epoch = null;
  offset = 0;
  duplicatesDropped = 0;
  /** A loss notice already told of the hole before the next message (its end was unknown). */
  #holeAnnounced = false;
  /**
   * Where the client stood in the epoch an `epoch_changed` notice left while the new epoch had
   * no message yet (`newEpoch` null): a rejoin resumes from there, so that the server says what
   * the new epoch holds by then. A plain join would skip it in silence.
   */
  #left = null;
  /**
   * The last offset delivered in each epoch an `epoch_changed` notice left (the last few): a
   * notice back into one of them (a primary that still held it is primary again) resumes after
   * that offset, as the server goes on from there.
   */
  #leftEpochs = /* @__PURE__ */ new Map();
  constructor(room) {
    this.room = room;
  }
  /** The `since` of a rejoin, or null when nothing was seen yet (a plain join). */
  since() {
    if (this.epoch === null) return this.#left === null ? null : { ...this.#left };
    return { epoch: this.epoch, offset: this.offset };
  }
  /** Move to the join's position; say whether a resume kept the stream whole. */
  onJoined(joined2) {
    if (joined2.already) return null;
    if (joined2.recovered === true && joined2.epoch === this.epoch) {
      return { type: "resumed", room: this.room, epoch: joined2.epoch, offset: this.offset };
    }
    this.epoch = joined2.epoch;
    this.offset = joined2.offset;
    this.#left = null;
    if (joined2.recovered === null) return null;
    return this.#gap(joined2.reason ?? "epoch_changed");
  }
  /** Whether to deliver `message`, and the gap it reveals, if any. */
  accept(message2) {
    if (this.epoch === null) {
      this.epoch = message2.epoch;
      this.offset = message2.offset;
      this.#left = null;
      return [true, null];
    }
    if (message2.epoch !== this.epoch) {
      this.epoch = message2.epoch;
      this.offset = message2.offset;
      this.#holeAnnounced = false;
      return [true, this.#gap("epoch_changed")];
    }
    if (message2.offset <= this.offset) {
      this.duplicatesDropped += 1;
      return [false, null];
    }
    const gap = message2.offset > this.offset + 1 && !this.#holeAnnounced ? this.#gap("offsets_skipped") : null;
    this.#holeAnnounced = false;
    this.offset = message2.offset;
    return [true, gap];
  }
  /** The server gave up on some offsets: continue after them, and say so (once). */
  onLoss(loss) {
    if (loss.reason === "epoch_changed") {
      if (this.epoch !== null && loss.epoch !== this.epoch) return null;
      if (this.epoch !== null) this.#leave(this.epoch, this.offset);
      if (loss.newEpoch === null) {
        if (this.epoch !== null) this.#left = { epoch: this.epoch, offset: this.offset };
        this.epoch = null;
        this.offset = 0;
        return { type: "gap", room: this.room, reason: loss.reason, epoch: "", offset: 0 };
      }
      this.epoch = loss.newEpoch;
      this.offset = this.#leftEpochs.get(loss.newEpoch) ?? 0;
      this.#leftEpochs.delete(loss.newEpoch);
      return this.#gap(loss.reason);
    }
    if (this.epoch === null && loss.epoch !== "") {
      this.epoch = loss.epoch;
      this.offset = 0;
      this.#left = null;
    }
    if (loss.epoch !== this.epoch) return null;
    if (loss.toOffset === null) {
      this.#holeAnnounced = true;
    } else {
      this.offset = Math.max(this.offset, loss.toOffset);
    }
    return this.#gap(loss.reason);
  }
  #leave(epoch, offset) {
    this.#leftEpochs.delete(epoch);
    this.#leftEpochs.set(epoch, offset);
    while (this.#leftEpochs.size > LEFT_EPOCHS_KEPT) this.#leftEpochs.delete(this.#leftEpochs.keys().next().value);
  }
  #gap(reason) {
    return { type: "gap", room: this.room, reason, epoch: this.epoch ?? "", offset: this.offset };
  }
};

// src/errors.ts
var ClientClosedError = class extends Error {
  name = "ClientClosedError";
  closed;
  constructor(closed) {
    super(closed.reason);
    this.closed = closed;
  }
};
var JoinError = class extends Error {
  name = "JoinError";
  error;
  constructor(error) {
    super(`join of ${JSON.stringify(error.room)} refused: ${error.code}: ${error.reason}`);
    this.error = error;
  }
};
var RequestError = class extends Error {
  name = "RequestError";
  error;
  constructor(error) {
    super(`${error.code}: ${error.reason}`);
    this.error = error;
  }
};
var TimeoutError = class extends Error {
  name = "TimeoutError";
};
var LinkLost = class extends Error {
  name = "LinkLost";
};

// src/events.ts
var BadField = class extends Error {
};
function str(data, key) {
  const value = data[key];
  if (typeof value !== "string") throw new BadField(key);
  return value;
}
function int(data, key) {
  const value = data[key];
  if (typeof value !== "number" || !Number.isSafeInteger(value)) throw new BadField(key);
  return value;
}
function optInt(data, key) {
  return data[key] === void 0 || data[key] === null ? null : int(data, key);
}
function optStr(data, key) {
  return data[key] === void 0 || data[key] === null ? null : str(data, key);
}
function optMilliseconds(data, key) {
  const value = data[key];
  return typeof value === "number" && Number.isFinite(value) && value >= 0 ? value * 1e3 : null;
}
function optBool(data, key) {
  const value = data[key];
  if (value === void 0 || value === null) return null;
  if (typeof value !== "boolean") throw new BadField(key);
  return value;
}
function requestId(data) {
  const value = data.id;
  if (typeof value === "string" || typeof value === "number" && Number.isSafeInteger(value)) {
    return value;
  }
  return null;
}
function objects(data, key) {
  const value = data[key];
  if (!Array.isArray(value) || !value.every((item) => item !== null && typeof item === "object")) {
    throw new BadField(key);
  }
  return value;
}
function userIds(data) {
  const value = data.user_ids;
  if (value === void 0 || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) throw new BadField("user_ids");
  const held = value;
  return Object.fromEntries(Object.keys(held).map((id) => [id, int(held, id)]));
}
function message(d) {
  if (d.deleted === true) {
    const room = str(d, "room");
    const offset = int(d, "offset");
    const epoch = str(d, "epoch");
    return { type: "message", room, username: "", text: "", timestamp: 0, offset, epoch, userId: null, deleted: true };
  }
  return {
    type: "message",
    room: str(d, "room"),
    username: str(d, "username"),
    text: str(d, "text"),
    timestamp: int(d, "timestamp"),
    offset: int(d, "offset"),
    epoch: str(d, "epoch"),
    userId: optStr(d, "user_id"),
    deleted: false
  };
}
function joined(d) {
  if (d.already === true) {
    const base = { username: "", epoch: "", offset: 0, recovered: null, reason: null, role: null, big: false, connections: null, userId: null };
    return { type: "joined", room: str(d, "room"), ...base, already: true, id: requestId(d) };
  }
  return {
    type: "joined",
    room: str(d, "room"),
    username: str(d, "username"),
    epoch: str(d, "epoch"),
    offset: int(d, "offset"),
    recovered: optBool(d, "recovered"),
    reason: optStr(d, "reason"),
    already: false,
    role: optStr(d, "role"),
    big: optBool(d, "big") === true,
    connections: optInt(d, "connections"),
    userId: optStr(d, "user_id"),
    id: requestId(d)
  };
}
var PARSERS = {
  welcome: (d) => ({
    type: "welcome",
    node: str(d, "node"),
    connection: str(d, "connection"),
    maxRooms: optInt(d, "max_rooms"),
    maxFrameBytes: optInt(d, "max_frame_bytes"),
    userId: optStr(d, "user_id")
  }),
  joined,
  left: (d) => ({ type: "left", room: str(d, "room"), id: requestId(d) }),
  user_joined: (d) => ({ type: "user_joined", room: str(d, "room"), username: str(d, "username"), userId: optStr(d, "user_id") }),
  user_left: (d) => ({ type: "user_left", room: str(d, "room"), username: str(d, "username"), userId: optStr(d, "user_id") }),
  message,
  typing: (d) => ({ type: "typing", room: str(d, "room"), username: str(d, "username"), userId: optStr(d, "user_id") }),
  presence: (d) => ({
    type: "presence",
    room: str(d, "room"),
    members: objects(d, "members").map((m) => ({
      username: str(m, "username"),
      connections: int(m, "connections"),
      userIds: userIds(m)
    })),
    totalMembers: optInt(d, "total_members"),
    totalConnections: optInt(d, "total_connections"),
    next: optStr(d, "next"),
    id: requestId(d)
  }),
  presence_changed: (d) => ({
    type: "presence_changed",
    room: str(d, "room"),
    joined: int(d, "joined"),
    left: int(d, "left"),
    connections: int(d, "connections"),
    big: optBool(d, "big") === true
  }),
  history: (d) => ({
    type: "history",
    room: str(d, "room"),
    epoch: str(d, "epoch"),
    offset: int(d, "offset"),
    messages: objects(d, "messages").map(message),
    id: requestId(d)
  }),
  error: (d) => ({
    type: "error",
    code: str(d, "code"),
    reason: str(d, "reason"),
    room: optStr(d, "room"),
    id: requestId(d),
    retryAfter: optMilliseconds(d, "retry_after")
  }),
  ack: (d) => {
    const id = requestId(d);
    if (id === null) throw new BadField("id");
    return { type: "ack", id, room: str(d, "room"), epoch: str(d, "epoch"), offset: int(d, "offset") };
  },
  loss: (d) => ({
    type: "loss",
    room: str(d, "room"),
    reason: str(d, "reason"),
    epoch: str(d, "epoch"),
    fromOffset: int(d, "from_offset"),
    toOffset: optInt(d, "to_offset"),
    newEpoch: optStr(d, "new_epoch")
  }),
  token_expiring: (d) => ({
    type: "token_expiring",
    expiresAt: int(d, "expires_at"),
    closesAt: int(d, "closes_at")
  }),
  refreshed: (d) => ({ type: "refreshed", expiresAt: int(d, "expires_at"), id: requestId(d) }),
  disconnect: (d) => ({ type: "disconnect", reason: str(d, "reason"), reconnect: optBool(d, "reconnect") === true }),
  removed: (d) => ({ type: "removed", room: str(d, "room"), reason: str(d, "reason") }),
  banned: (d) => ({ type: "banned", room: str(d, "room"), reason: str(d, "reason"), until: int(d, "until") }),
  message_deleted: (d) => ({
    type: "message_deleted",
    room: str(d, "room"),
    epoch: str(d, "epoch"),
    offset: int(d, "offset")
  }),
  history_cleared: (d) => ({
    type: "history_cleared",
    room: str(d, "room"),
    epoch: str(d, "epoch"),
    upToOffset: int(d, "up_to_offset")
  })
};
function parseEvent(raw) {
  const text = typeof raw === "string" ? raw : String(raw);
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    return { type: "unknown", frameType: "", raw: text, data: null };
  }
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    return { type: "unknown", frameType: "", raw: text, data: null };
  }
  const frame = data;
  const kind = typeof frame.type === "string" ? frame.type : "";
  const parser = Object.hasOwn(PARSERS, kind) ? PARSERS[kind] : void 0;
  if (parser !== void 0) {
    try {
      return parser(frame);
    } catch (error) {
      if (!(error instanceof BadField)) throw error;
    }
  }
  return { type: "unknown", frameType: kind, raw: text, data: Object.freeze(frame) };
}

// src/outgoing.ts
var SendError = class extends Error {
  name = "SendError";
  code;
  room;
  text;
  messageId;
  constructor(failure, detail) {
    super(`message to ${JSON.stringify(failure.room)} not delivered: ${failure.reason}${detail ? ` (${detail})` : ""}`);
    this.code = failure.reason;
    this.room = failure.room;
    this.text = failure.text;
    this.messageId = failure.messageId;
  }
};
var Outgoing = class {
  id;
  room;
  text;
  queuedAt;
  status = "queued";
  /** Serial of the connection it was written to, and when. */
  writtenOn = null;
  writtenAt = null;
  delivered;
  #resolve;
  #reject;
  constructor(id, room, text, now) {
    this.id = id;
    this.room = room;
    this.text = text;
    this.queuedAt = now;
    this.delivered = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.delivered.catch(() => void 0);
  }
  get done() {
    return this.status === "delivered" || this.status === "failed";
  }
  then(onFulfilled, onRejected) {
    return this.delivered.then(onFulfilled, onRejected);
  }
  resolve(epoch, offset) {
    if (this.done) return;
    this.status = "delivered";
    this.#resolve({ id: this.id, room: this.room, epoch, offset });
  }
  fail(reason, detail) {
    const failure = {
      type: "send_failed",
      room: this.room,
      text: this.text,
      reason,
      messageId: this.id
    };
    if (!this.done) {
      this.status = "failed";
      this.#reject(new SendError(failure, detail));
    }
    return failure;
  }
};
var SendBook = class {
  maxUnsent;
  queueTimeout;
  confirmTimeout;
  #unsent = /* @__PURE__ */ new Map();
  #inFlight = /* @__PURE__ */ new Map();
  #unsentCount = 0;
  constructor(maxUnsent, queueTimeout, confirmTimeout) {
    this.maxUnsent = maxUnsent;
    this.queueTimeout = queueTimeout;
    this.confirmTimeout = confirmTimeout;
  }
  get unsentCount() {
    return this.#unsentCount;
  }
  get inFlightCount() {
    let count = 0;
    for (const queue of this.#inFlight.values()) count += queue.length;
    return count;
  }
  /** Every message not settled yet, oldest first. */
  pending() {
    const all = [...this.#unsent.values(), ...this.#inFlight.values()].flat();
    return all.sort((a, b) => a.id - b.id);
  }
  queue(outgoing) {
    if (this.#unsentCount >= this.maxUnsent) return outgoing.fail("queue_full", `${this.maxUnsent} messages already wait`);
    push(this.#unsent, outgoing.room, outgoing);
    this.#unsentCount += 1;
    return null;
  }
  hasUnsent(room) {
    return (this.#unsent.get(room)?.length ?? 0) > 0;
  }
  takeUnsent(room) {
    const taken = this.#unsent.get(room) ?? [];
    this.#unsent.delete(room);
    this.#unsentCount -= taken.length;
    return taken;
  }
  /** Return messages that could not be written, ahead of the ones queued since. */
  putBack(outgoing) {
    if (outgoing.done) return;
    outgoing.status = "queued";
    const queue = this.#unsent.get(outgoing.room) ?? [];
    queue.unshift(outgoing);
    queue.sort((a, b) => a.id - b.id);
    this.#unsent.set(outgoing.room, queue);
    this.#unsentCount += 1;
  }
  written(outgoing, link, now) {
    outgoing.status = "sent";
    outgoing.writtenOn = link;
    outgoing.writtenAt = now;
    push(this.#inFlight, outgoing.room, outgoing);
  }
  /** The server published our message `ack.id` at `ack.offset`. */
  acknowledge(ack) {
    const queue = this.#inFlight.get(ack.room);
    const outgoing = queue?.find((o) => o.id === ack.id);
    if (!queue || !outgoing) return null;
    remove(queue, outgoing);
    outgoing.resolve(ack.epoch, ack.offset);
    return outgoing;
  }
  /**
   * `message`, sent under our name, arrived: if it is the echo of a message written on an
   * earlier connection (whose ack was lost with it), that message is delivered. The resume's
   * replay brings such echoes, and the text is all there is to recognise them by.
   */
  confirm(message2, link) {
    const queue = this.#inFlight.get(message2.room);
    const outgoing = queue?.find(
      (o) => o.writtenOn !== null && o.writtenOn < link && o.text === message2.text
    );
    if (!queue || !outgoing) return null;
    remove(queue, outgoing);
    outgoing.resolve(message2.epoch, message2.offset);
    return outgoing;
  }
  /** The server refused our message `error.id` (unavailable, rate_limited, ...). */
  refuse(error) {
    for (const queue of this.#inFlight.values()) {
      const outgoing = queue.find((o) => o.id === error.id);
      if (outgoing) {
        remove(queue, outgoing);
        return outgoing.fail(error.code, error.reason);
      }
    }
    return null;
  }
  /** Messages written on an earlier connection whose echo a resume did not bring back. */
  settleBefore(room, link) {
    const queue = this.#inFlight.get(room) ?? [];
    const stale = queue.filter((o) => o.writtenOn !== null && o.writtenOn < link);
    for (const outgoing of stale) remove(queue, outgoing);
    return stale.map((o) => o.fail("unconfirmed", "the connection was lost before the server confirmed it; it may or may not have been delivered"));
  }
  expire(now) {
    const failures = [];
    for (const queue of this.#unsent.values()) {
      while (queue[0] && now - queue[0].queuedAt >= this.queueTimeout) {
        failures.push(queue.shift().fail("expired", "no connection in time"));
        this.#unsentCount -= 1;
      }
    }
    for (const queue of this.#inFlight.values()) {
      while (queue[0] && now - (queue[0].writtenAt ?? now) >= this.confirmTimeout) {
        failures.push(queue.shift().fail("unconfirmed", "no acknowledgement in time; it may or may not have been delivered"));
      }
    }
    return failures;
  }
  dropRoom(room, reason) {
    const unsent = this.takeUnsent(room);
    const inFlight = this.#inFlight.get(room) ?? [];
    this.#inFlight.delete(room);
    return [...unsent.map((o) => o.fail(reason)), ...inFlight.map((o) => o.fail("unconfirmed"))];
  }
  failAll(reason) {
    const rooms = /* @__PURE__ */ new Set([...this.#unsent.keys(), ...this.#inFlight.keys()]);
    return [...rooms].flatMap((room) => this.dropRoom(room, reason));
  }
};
function push(map, room, outgoing) {
  const queue = map.get(room);
  if (queue) queue.push(outgoing);
  else map.set(room, [outgoing]);
}
function remove(queue, outgoing) {
  const index = queue.indexOf(outgoing);
  if (index >= 0) queue.splice(index, 1);
}

// src/socket.ts
var OPEN = 1;
function globalWebSocket() {
  const candidate = globalThis.WebSocket;
  return typeof candidate === "function" ? candidate : null;
}
function handshakeStatus(event) {
  const error = event ?? {};
  const text = [error.message, error.error?.message].filter((part) => typeof part === "string").join(" ");
  const match = /Unexpected server response: (\d{3})/.exec(text);
  return match ? Number(match[1]) : null;
}

// src/client.ts
var MAX_RETRY_AFTER_MS = 6e5;
var MAX_OWN_IDS = 256;
var DEFAULT_MAX_FRAME_BYTES = 65536;
var encoder = new TextEncoder();
var RoomcastClient = class {
  url;
  username;
  /** Why the client stopped, while `offline` or `closed`. */
  closed = null;
  /** Failed or lost connections in a row: the backoff's exponent. */
  attempt = 0;
  /** When the next attempt starts (ms since the epoch), while waiting for it. */
  retryAt = null;
  #token;
  #backoff;
  #stableAfter;
  #maxAttempts;
  #openTimeout;
  #requestTimeout;
  #typingInterval;
  #WebSocket;
  #book;
  #rooms = /* @__PURE__ */ new Map();
  #requests = /* @__PURE__ */ new Map();
  #listeners = /* @__PURE__ */ new Map();
  #anyListeners = /* @__PURE__ */ new Set();
  #state = "idle";
  #link = null;
  #serial = 0;
  #nextMessageId = 0;
  #nextRequestId = 0;
  #retryTimer = null;
  #expireTimer = null;
  #hasConnected = false;
  #maxFrameBytes = DEFAULT_MAX_FRAME_BYTES;
  // The userId of each of our connections (open mode gives each its own), the latest last.
  #ownIds = /* @__PURE__ */ new Set();
  #changed = signal();
  constructor(url, username, options = {}) {
    if (!/^wss?:\/\//i.test(url)) throw new TypeError(`not a WebSocket URL: ${JSON.stringify(url)}`);
    const WebSocketClass = options.WebSocket ?? globalWebSocket();
    if (WebSocketClass === null) {
      throw new TypeError("no global WebSocket here: pass { WebSocket } (e.g. from the ws package)");
    }
    this.url = url;
    this.username = username;
    this.#token = { source: options.token ?? null };
    this.#backoff = options.backoff instanceof Backoff ? options.backoff : new Backoff(options.backoff);
    this.#stableAfter = options.stableAfter ?? 1e4;
    this.#maxAttempts = options.maxAttempts ?? null;
    this.#openTimeout = options.openTimeout ?? 1e4;
    this.#requestTimeout = options.requestTimeout ?? 1e4;
    this.#typingInterval = options.typingInterval ?? 1e3;
    this.#WebSocket = WebSocketClass;
    this.#book = new SendBook(options.maxUnsent ?? 1e3, options.queueTimeout ?? 6e4, options.confirmTimeout ?? 3e4);
    for (const room of options.rooms ?? []) this.#rooms.set(room, { ...newRoom(room, username), kept: true });
  }
  // Events
  /** Call `listener` for every event of `type`; returns the function that removes it. */
  on(type, listener) {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, set = /* @__PURE__ */ new Set());
    set.add(listener);
    return () => set.delete(listener);
  }
  /** Call `listener` for every event, of every type. */
  onEvent(listener) {
    this.#anyListeners.add(listener);
    return () => this.#anyListeners.delete(listener);
  }
  // Lifecycle
  /** Start connecting (also done by `join()` and `send()`' callers through `start()` once). */
  start() {
    if (this.#state === "idle") {
      this.#expireTimer = setInterval(() => this.#expire(), Math.max(50, Math.min(this.#book.queueTimeout, this.#book.confirmTimeout) / 10));
      this.#connect();
    }
    return this;
  }
  /** Stop for good: what is queued or in flight fails with `stopped`; a `closed` event follows. */
  async close() {
    if (this.#state === "closed") return;
    this.#stopLink("closed by the application");
    if (this.#expireTimer !== null) clearInterval(this.#expireTimer);
    this.#expireTimer = null;
    const closed = closedEvent("closed by the application");
    this.#emitAll(this.#book.failAll("stopped"));
    this.#goOffline(closed, "closed");
  }
  /** Stop connecting (e.g. the application goes to the background); `reconnect()` resumes. */
  disconnect(reason = "disconnected by the application") {
    if (this.#state === "closed" || this.#state === "offline") return;
    this.#stopLink(reason);
    this.#goOffline(closedEvent(reason), "offline");
  }
  /** Connect now: from `offline`, or instead of waiting out the current backoff delay. */
  reconnect() {
    if (this.#state === "offline") {
      this.closed = null;
      this.attempt = 0;
      this.#connect();
    } else if (this.#state === "reconnecting" && this.#link === null) {
      this.#connect();
    }
  }
  /** Give the server a fresh token on the open connection (and use it for the next ones). */
  async refresh(token) {
    if (token !== void 0 && typeof this.#token.source !== "function") this.#token.source = token;
    const fresh = token ?? await this.#resolveToken();
    const link = this.#link;
    if (fresh === null || link?.welcome == null) return;
    this.#write(link, { type: "refresh", token: fresh, id: this.#requestId("refresh") });
  }
  // State
  get state() {
    return this.#state;
  }
  get connected() {
    return this.#link?.welcome != null;
  }
  /** The node of the current connection (from its `welcome`). */
  get node() {
    return this.#link?.welcome?.node ?? null;
  }
  get connectionId() {
    return this.#link?.welcome?.connection ?? null;
  }
  /** Our own `userId` on the current connection (from its `welcome`; null from an older server). */
  get userId() {
    return this.#link?.welcome?.userId ?? null;
  }
  /**
   * Whether an event about a user (`message`, `typing`, `user_joined`, `user_left`) is about us:
   * by its `userId` (any of this client's connections'), so a namesake's is not, nor one without
   * (a message the server API posted); by name only from a server that sends no `userId`. In
   * open mode each connection has its own id: a page loaded again does not know its earlier
   * messages as its own.
   */
  isOwn(event) {
    if (event.userId !== null) return this.#ownIds.has(event.userId);
    if (this.#ownIds.size > 0) return false;
    return event.username === (this.#rooms.get(event.room)?.username ?? this.username);
  }
  /** The largest frame the server accepts (its `welcome` says; 65536 until then). */
  get maxFrameBytes() {
    return this.#maxFrameBytes;
  }
  get unsentCount() {
    return this.#book.unsentCount;
  }
  get inFlightCount() {
    return this.#book.inFlightCount;
  }
  /** Messages waiting for a connection or for their ack, oldest first. */
  pending() {
    return this.#book.pending().map(({ id, room, text, status }) => ({
      id,
      room,
      text,
      status: status === "sent" ? "sent" : "queued"
    }));
  }
  /** Rooms the client keeps joined. */
  rooms() {
    return [...this.#rooms.keys()];
  }
  /** Whether `room` is joined on the current connection. */
  isJoined(room) {
    const state = this.#rooms.get(room);
    return state !== void 0 && this.#link !== null && state.liveOn === this.#link.serial;
  }
  /** `{epoch, offset}` of the last message delivered in `room` (or of its join). */
  position(room) {
    return this.#rooms.get(room)?.cursor.since() ?? null;
  }
  duplicatesDropped(room) {
    return this.#rooms.get(room)?.cursor.duplicatesDropped ?? 0;
  }
  /** Until a connection is up (its node id); rejects with ClientClosedError if it stopped. */
  async waitConnected(timeout) {
    const deadline = Date.now() + (timeout ?? this.#requestTimeout);
    for (; ; ) {
      this.#raiseIfStopped();
      const node = this.node;
      if (node !== null) return node;
      await this.#waitChange(deadline, "a connection");
    }
  }
  // Commands
  /**
   * Join `room` (rejoined after every reconnect until `leave`): its `joined` event. Waits across
   * reconnects, up to `timeout` ms (default `requestTimeout`); a refusal (`forbidden`,
   * `invalid_room`, `too_many_rooms`, `rate_limited`...) of a room not joined before rejects with
   * JoinError (its `error.retryAfter`: the server's hint, if any) and forgets the room. A room
   * joined before (or given at start) is the client's to keep: its join refused with
   * `rate_limited` or `hook_unavailable` is retried (a `rejoining` event each time) and this call
   * waits on, up to `timeout`.
   */
  async join(room, { timeout } = {}) {
    this.#raiseIfClosed();
    let state = this.#rooms.get(room);
    if (!state) this.#rooms.set(room, state = newRoom(room, this.username));
    const link = this.#link;
    if (link !== null && state.liveOn === link.serial && state.lastJoined !== null) return state.lastJoined;
    if (this.#state === "idle") this.start();
    const roomState = state;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        roomState.waiters.delete(waiter);
        reject(new TimeoutError(`no answer to the join of ${JSON.stringify(room)} in time`));
      }, timeout ?? this.#requestTimeout);
      const waiter = {
        resolve: (value) => (clearTimeout(timer), resolve(value)),
        reject: (error) => (clearTimeout(timer), reject(error))
      };
      roomState.waiters.add(waiter);
      const current = this.#link;
      if (current?.welcome != null && roomState.joinSentOn !== current.serial && roomState.rejoinTimer === null) {
        this.#sendJoin(current, room, roomState);
      }
    });
  }
  /** Leave `room`; what was queued for it fails with `left`. */
  async leave(room, { timeout } = {}) {
    const state = this.#rooms.get(room);
    if (!state) return;
    this.#rooms.delete(room);
    cancelRejoin(state);
    this.#emitAll(this.#book.dropRoom(room, "left"));
    this.#emit({ type: "outbox" });
    const link = this.#link;
    if (link !== null && state.liveOn === link.serial) {
      const answer = this.#expect(room, "leave", link, {}, timeout);
      try {
        await answer;
      } catch (error) {
        if (!(error instanceof LinkLost)) throw error;
      }
    }
  }
  /**
   * Send `text` to `room` now, or once connected and rejoined. `await` the returned handle for
   * the message's `{epoch, offset}` (from the server's ack) or a SendError whose `code` is the
   * server's error code (`rate_limited`, `unavailable`...) or the client's reason (`queue_full`,
   * `expired`, `too_big`, `unconfirmed`, `left`, `stopped`). Each failure is also a
   * `send_failed` event.
   */
  send(room, text) {
    this.#raiseIfClosed();
    const state = this.#rooms.get(room);
    if (!state) throw new Error(`join ${JSON.stringify(room)} before sending to it`);
    this.#nextMessageId += 1;
    state.lastTyping = -Infinity;
    const outgoing = new Outgoing(this.#nextMessageId, room, text, Date.now());
    const frame = { type: "message", room, text, id: outgoing.id };
    const size = encoder.encode(JSON.stringify(frame)).length;
    if (size > this.#maxFrameBytes) {
      this.#emit(outgoing.fail("too_big", `longer than the server accepts (${this.#maxFrameBytes} bytes)`));
      return outgoing;
    }
    const link = this.#link;
    if (link !== null && state.liveOn === link.serial && !this.#book.hasUnsent(room)) {
      this.#writeMessage(link, outgoing);
    } else {
      const failure = this.#book.queue(outgoing);
      if (failure) this.#emit(failure);
    }
    this.#emit({ type: "outbox" });
    return outgoing;
  }
  /**
   * Tell the room we are typing, at most once per `typingInterval` (a `send()` to the room
   * starts the interval over); whether it went. Dropped
   * when offline: a stale typing notice is worse than none. The throttle keeps a key-press
   * handler from tripping the server's typing limit (and its 1008 close).
   */
  typing(room) {
    const state = this.#rooms.get(room);
    const link = this.#link;
    const now = Date.now();
    if (!state || link === null || state.liveOn !== link.serial) return false;
    if (now - state.lastTyping < this.#typingInterval) return false;
    state.lastTyping = now;
    return this.#write(link, { type: "typing", room });
  }
  /**
   * Who is in `room`, on every node; waits until the room is joined (up to `timeout`). With
   * `limit` (1-1000) and `after` (the previous page's `next`): a page. A big room always
   * answers by pages (`totalMembers` is then set).
   */
  async presence(room, { timeout, limit, after } = {}) {
    const extra = {};
    if (limit !== void 0) extra.limit = limit;
    if (after !== void 0) extra.after = after;
    return await this.#request(room, "presence", extra, timeout);
  }
  /**
   * Every member of `room`, page by page (`page` names each, 1000 at most): a name present for
   * the whole walk comes exactly once, one that comes or goes meanwhile at most once.
   */
  async *allMembers(room, { page = 1e3, timeout } = {}) {
    let after;
    for (; ; ) {
      const answer = await this.presence(room, { limit: page, after, timeout });
      yield* answer.members;
      if (answer.next === null) return;
      after = answer.next;
    }
  }
  /** The last `limit` messages the server keeps for `room` (all kept by default), oldest first. */
  async history(room, limit, { timeout } = {}) {
    const extra = limit === void 0 ? {} : { limit };
    return await this.#request(room, "history", extra, timeout);
  }
  // The connection
  async #connect() {
    this.#clearRetry();
    this.#setState(this.#hasConnected || this.attempt > 0 ? "reconnecting" : "connecting");
    let token;
    try {
      token = await this.#resolveToken();
    } catch (error) {
      this.#retry(`token: ${String(error)}`);
      return;
    }
    if (this.#state === "offline" || this.#state === "closed" || this.#link !== null) return;
    const protocols = ["roomcast"];
    if (token) protocols.push(`roomcast.token.${token}`);
    let ws;
    try {
      ws = new this.#WebSocket(this.url, protocols);
    } catch (error) {
      this.#retry(String(error));
      return;
    }
    this.#serial += 1;
    const link = { serial: this.#serial, ws, welcome: null, openedAt: Date.now(), httpStatus: null, openTimer: null };
    this.#link = link;
    link.openTimer = setTimeout(() => {
      link.openTimer = null;
      if (link.welcome === null) this.#endLink(link, CloseCode.ABNORMAL, "no welcome from the server in time");
    }, this.#openTimeout);
    ws.addEventListener("message", (event) => this.#onFrame(link, event.data));
    ws.addEventListener("error", (event) => {
      link.httpStatus ??= handshakeStatus(event);
    });
    ws.addEventListener(
      "close",
      (event) => this.#endLink(link, event.code ?? CloseCode.ABNORMAL, event.reason ?? "")
    );
  }
  async #resolveToken() {
    const source = this.#token.source;
    return typeof source === "function" ? await source() : source;
  }
  #onFrame(link, data) {
    if (this.#link !== link) return;
    if (typeof data !== "string") return;
    const event = parseEvent(data);
    if (link.welcome === null) {
      if (link.openTimer !== null) clearTimeout(link.openTimer);
      link.openTimer = null;
      link.welcome = event.type === "welcome" ? event : { type: "welcome", node: "", connection: "", maxRooms: null, maxFrameBytes: null, userId: null };
      this.#maxFrameBytes = link.welcome.maxFrameBytes ?? this.#maxFrameBytes;
      this.#rememberOwnId(link.welcome.userId);
      this.#hasConnected = true;
      this.#setState("connected");
      this.#emit({ type: "connected", node: link.welcome.node, connection: link.welcome.connection, attempt: this.attempt });
      if (event.type === "welcome") this.#emit(event);
      else this.#dispatch(link, event);
      for (const [room, state] of this.#rooms) this.#joinWhenDue(link, room, state);
      this.#signal();
      return;
    }
    this.#dispatch(link, event);
  }
  #endLink(link, code, reason) {
    if (this.#link !== link) return;
    this.#dropLink(link);
    try {
      link.ws.close(1e3, "done");
    } catch {
    }
    if (this.#state === "offline" || this.#state === "closed") return;
    if (link.httpStatus !== null && FATAL_HTTP_STATUSES.has(link.httpStatus)) {
      this.#goOffline(closedEvent(`handshake refused: HTTP ${link.httpStatus}`, null, link.httpStatus), "offline");
      return;
    }
    const fatal = FATAL_CLOSE_CODES.get(code);
    if (fatal !== void 0) {
      this.#emit({ type: "disconnected", code, reason, willReconnect: false });
      this.#goOffline(closedEvent(`closed by the server: ${fatal} (close ${code})`, code), "offline");
      return;
    }
    if (code === CloseCode.TOKEN_EXPIRED && typeof this.#token.source !== "function") {
      this.#emit({ type: "disconnected", code, reason, willReconnect: false });
      this.#goOffline(closedEvent(`closed by the server: the token expired and no token callback can renew it (close ${code})`, code), "offline");
      return;
    }
    let cause = link.httpStatus !== null ? `HTTP ${link.httpStatus}` : "could not connect";
    if (link.welcome !== null) {
      this.#emit({ type: "disconnected", code, reason, willReconnect: true });
      if (Date.now() - link.openedAt >= this.#stableAfter) this.attempt = 0;
      cause = `closed ${code}${reason ? `: ${reason}` : ""}`;
    }
    this.#retry(cause, link.httpStatus !== null && BUSY_HTTP_STATUSES.has(link.httpStatus) ? BUSY_RETRY_MS : 0);
  }
  #retry(cause, floor = 0) {
    this.attempt += 1;
    if (this.#maxAttempts !== null && this.attempt > this.#maxAttempts) {
      this.#goOffline(closedEvent(`gave up after ${this.#maxAttempts} attempts: ${cause}`), "offline");
      return;
    }
    const delay = floor + this.#backoff.delay(this.attempt);
    this.retryAt = Date.now() + delay;
    this.#setState("reconnecting");
    this.#emit({ type: "reconnecting", attempt: this.attempt, delay, cause });
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      void this.#connect();
    }, delay);
  }
  #clearRetry() {
    if (this.#retryTimer !== null) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.retryAt = null;
  }
  #dropLink(link) {
    if (link.openTimer !== null) clearTimeout(link.openTimer);
    link.openTimer = null;
    if (this.#link === link) this.#link = null;
    for (const state of this.#rooms.values()) {
      if (state.liveOn === link.serial) state.liveOn = null;
      cancelRejoin(state);
    }
    const lost = [...this.#requests.values()];
    this.#requests.clear();
    for (const request of lost) request.reject(new LinkLost("connection lost"));
    this.#signal();
  }
  #stopLink(reason) {
    this.#clearRetry();
    const link = this.#link;
    if (link === null) return;
    this.#dropLink(link);
    try {
      link.ws.close(1e3, reason.slice(0, 100));
    } catch {
    }
  }
  #goOffline(closed, state) {
    this.#clearRetry();
    this.closed = closed;
    for (const room of this.#rooms.values()) {
      cancelRejoin(room);
      for (const waiter of room.waiters) waiter.reject(new ClientClosedError(closed));
      room.waiters.clear();
    }
    this.#setState(state);
    this.#emit(closed);
    this.#signal();
  }
  // Frames in
  #dispatch(link, event) {
    switch (event.type) {
      case "message":
        this.#onMessage(link, event);
        return;
      case "joined":
        this.#onJoined(link, event);
        return;
      case "ack":
        if (this.#book.acknowledge(event)) this.#emit({ type: "outbox" });
        return;
      case "loss": {
        this.#emit(event);
        const gap = this.#rooms.get(event.room)?.cursor.onLoss(event);
        if (gap) this.#emit(gap);
        return;
      }
      case "error":
        this.#onError(link, event);
        return;
      case "presence":
      case "history":
      case "left":
      case "refreshed":
        this.#answer(event, event.id);
        break;
      case "token_expiring":
        if (typeof this.#token.source === "function") void this.refresh().catch(() => void 0);
        break;
      case "removed":
      case "banned":
        this.#onRemoved(event.room, event.type);
        break;
      default:
        break;
    }
    this.#emit(event);
  }
  #onMessage(link, message2) {
    const state = this.#rooms.get(message2.room);
    if (!state) {
      this.#emit(message2);
      return;
    }
    const [deliver, gap] = state.cursor.accept(message2);
    if (gap) this.#emit(gap);
    if (!deliver) return;
    if (this.#mayBeOurEcho(message2, state.username) && this.#book.confirm(message2, link.serial)) this.#emit({ type: "outbox" });
    this.#emit(message2);
    this.#settleResume(link, message2.room, state);
  }
  #onJoined(link, joined2) {
    const state = this.#rooms.get(joined2.room);
    this.#emit(joined2);
    if (!state) return;
    if (!joined2.already) {
      state.username = joined2.username;
      const outcome = state.cursor.onJoined(joined2);
      if (outcome) this.#emit(outcome);
      state.resumeTarget = joined2.recovered === true ? joined2.offset : null;
      if (joined2.recovered === false) this.#emitAll(this.#book.settleBefore(joined2.room, link.serial));
    }
    state.liveOn = link.serial;
    state.lastJoined = joined2;
    state.kept = true;
    state.rejoinAttempt = 0;
    state.rejoinAt = null;
    cancelRejoin(state);
    for (const waiter of state.waiters) waiter.resolve(joined2);
    state.waiters.clear();
    for (const outgoing of this.#book.takeUnsent(joined2.room)) this.#writeMessage(link, outgoing);
    this.#settleResume(link, joined2.room, state);
    this.#emit({ type: "outbox" });
    this.#signal();
  }
  #settleResume(link, room, state) {
    if (state.resumeTarget !== null && state.cursor.offset >= state.resumeTarget) {
      state.resumeTarget = null;
      const failures = this.#book.settleBefore(room, link.serial);
      if (failures.length) {
        this.#emitAll(failures);
        this.#emit({ type: "outbox" });
      }
    }
  }
  #onError(link, error) {
    const failure = error.id !== null ? this.#book.refuse(error) : null;
    if (failure) {
      this.#emit(error);
      this.#emit(failure);
      this.#emit({ type: "outbox" });
      return;
    }
    const joining = [...this.#rooms].find(([, s]) => s.joinId !== null && s.joinId === error.id && s.joinSentOn === link.serial);
    if (joining) {
      this.#onJoinRefused(link, joining[0], joining[1], error);
      return;
    }
    if (typeof error.id === "string" && this.#requests.has(error.id)) {
      const request = this.#requests.get(error.id);
      this.#requests.delete(error.id);
      request.reject(new RequestError(error));
    }
    if (error.code === ErrorCode.RATE_LIMITED && error.room === null && error.id === null) this.#unnamedRefusal(link, error);
    this.#emit(error);
  }
  /**
   * A frame refused before the node read it (over the connection's frame rate or its client's
   * receive budget: `rate_limited` with no room and no id) may have been a join, which then never
   * gets an answer. The joins unanswered on this connection are sent again if still unanswered
   * `requestTimeout` later (an answer that slow is not coming).
   */
  #unnamedRefusal(link, error) {
    const waiting = [...this.#rooms].filter(([, s]) => s.joinSentOn === link.serial && s.liveOn !== link.serial && s.joinId !== null);
    if (waiting.length === 0) return;
    const joins = waiting.map(([room, state]) => ({ room, state, joinId: state.joinId }));
    setTimeout(() => {
      if (this.#link !== link) return;
      for (const { room, state, joinId } of joins) {
        if (this.#rooms.get(room) !== state || state.joinId !== joinId || state.liveOn === link.serial) continue;
        state.rejoinAttempt += 1;
        const reason = `no answer to the join after: ${error.reason}`;
        this.#emit({ type: "rejoining", room, attempt: state.rejoinAttempt, delay: 0, code: error.code, reason });
        this.#sendJoin(link, room, state);
      }
    }, this.#requestTimeout);
  }
  #onJoinRefused(link, room, state, error) {
    this.#emit(error);
    state.joinSentOn = null;
    state.joinId = null;
    if (error.code === ErrorCode.UNAVAILABLE) {
      this.#endLink(link, CloseCode.NORMAL, "rejoin later");
      return;
    }
    if (RETRIED_JOIN_ERRORS.has(error.code) && state.kept) {
      this.#delayJoin(link, room, state, error);
      return;
    }
    this.#rooms.delete(room);
    this.#emitAll(this.#book.dropRoom(room, "stopped"));
    for (const waiter of state.waiters) waiter.reject(new JoinError(error));
    state.waiters.clear();
    this.#emit({ type: "outbox" });
  }
  /** The application took us out of `room`: it is not rejoined, and what waited for it fails. */
  #onRemoved(room, why) {
    const state = this.#rooms.get(room);
    if (!state) return;
    this.#rooms.delete(room);
    cancelRejoin(state);
    this.#emitAll(this.#book.dropRoom(room, why));
    const code = why === "banned" ? ErrorCode.BANNED : ErrorCode.FORBIDDEN;
    const refusal = { type: "error", code, reason: why, room, id: null, retryAfter: null };
    for (const waiter of state.waiters) waiter.reject(new JoinError(refusal));
    state.waiters.clear();
    this.#emit({ type: "outbox" });
  }
  #answer(event, id) {
    if (typeof id !== "string") return;
    const request = this.#requests.get(id);
    if (!request) return;
    this.#requests.delete(id);
    request.resolve(event);
  }
  // Requests
  async #request(room, kind, extra, timeout) {
    const deadline = Date.now() + (timeout ?? this.#requestTimeout);
    for (; ; ) {
      this.#raiseIfStopped();
      const state = this.#rooms.get(room);
      if (!state) throw new Error(`join ${JSON.stringify(room)} first`);
      const link = this.#link;
      if (link === null || state.liveOn !== link.serial) {
        await this.#waitChange(deadline, `an answer to ${kind}`);
        continue;
      }
      try {
        return await this.#expect(room, kind, link, extra, deadline - Date.now());
      } catch (error) {
        if (!(error instanceof LinkLost)) throw error;
      }
    }
  }
  #expect(room, kind, link, extra, timeout) {
    const id = this.#requestId(kind);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#requests.delete(id);
        reject(new TimeoutError(`no answer to ${kind} in time`));
      }, Math.max(0, timeout ?? this.#requestTimeout));
      this.#requests.set(id, {
        room,
        resolve: (event) => (clearTimeout(timer), resolve(event)),
        reject: (error) => (clearTimeout(timer), reject(error))
      });
      this.#write(link, { type: kind, room, ...extra, id });
    });
  }
  #requestId(kind) {
    this.#nextRequestId += 1;
    return `${kind}:${this.#nextRequestId}`;
  }
  // Frames out
  /**
   * Send the join of `room` again after the server's hint plus a full-jitter draw (growing with
   * each refusal in a row, at most the backoff's cap): the clients of one address refused together
   * come back spread out, not at one instant.
   */
  #delayJoin(link, room, state, error) {
    state.rejoinAttempt += 1;
    const hint = Math.min(MAX_RETRY_AFTER_MS, error.retryAfter ?? 0);
    const delay = hint + this.#backoff.delay(state.rejoinAttempt);
    state.rejoinAt = Date.now() + delay;
    this.#emit({ type: "rejoining", room, attempt: state.rejoinAttempt, delay, code: error.code, reason: error.reason });
    this.#scheduleJoin(link, room, state, delay);
  }
  /** Join `room` on a new connection now, or when its refused rejoin's delay ends. */
  #joinWhenDue(link, room, state) {
    const wait = state.rejoinAt === null ? 0 : state.rejoinAt - Date.now();
    if (wait > 0) this.#scheduleJoin(link, room, state, wait);
    else this.#sendJoin(link, room, state);
  }
  #scheduleJoin(link, room, state, delay) {
    cancelRejoin(state);
    state.rejoinTimer = setTimeout(() => {
      state.rejoinTimer = null;
      if (this.#link !== link || this.#rooms.get(room) !== state) return;
      if (state.liveOn !== link.serial && state.joinSentOn !== link.serial) this.#sendJoin(link, room, state);
    }, delay);
  }
  #sendJoin(link, room, state) {
    const frame = { type: "join", room, username: this.username };
    const since = state.cursor.since();
    if (since !== null) frame.since = since;
    frame.id = state.joinId = this.#requestId("join");
    state.joinSentOn = link.serial;
    this.#write(link, frame);
  }
  #writeMessage(link, outgoing) {
    const frame = { type: "message", room: outgoing.room, text: outgoing.text, id: outgoing.id };
    if (this.#write(link, frame)) this.#book.written(outgoing, link.serial, Date.now());
    else this.#book.putBack(outgoing);
  }
  #write(link, frame) {
    if (this.#link !== link || link.ws.readyState !== OPEN) return false;
    link.ws.send(JSON.stringify(frame));
    return true;
  }
  // Helpers
  #expire() {
    const failures = this.#book.expire(Date.now());
    if (failures.length) {
      this.#emitAll(failures);
      this.#emit({ type: "outbox" });
    }
  }
  #setState(state) {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    this.#emit({ type: "state", state, previous });
  }
  #emit(event) {
    for (const listener of [...this.#listeners.get(event.type) ?? []]) report(() => listener(event));
    for (const listener of [...this.#anyListeners]) report(() => listener(event));
  }
  #emitAll(events) {
    for (const event of events) this.#emit(event);
  }
  #signal() {
    const previous = this.#changed;
    this.#changed = signal();
    previous.fire();
  }
  async #waitChange(deadline, what) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new TimeoutError(`no ${what} in time`);
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(`no ${what} in time`)), remaining);
    });
    try {
      await Promise.race([this.#changed.promise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
  #raiseIfClosed() {
    if (this.#state === "closed" && this.closed) throw new ClientClosedError(this.closed);
  }
  /**
   * Whether `message` may confirm one we sent: `isOwn`, or one without a `userId` under our name
   * in its room. Nodes of the previous release send no `userId`, and during a rolling update a
   * client that met a newer node may resume on an older one (or its resume replays what an older
   * node published): taken for someone else's, our message whose ack was lost with its
   * connection was reported unconfirmed though delivered. The send book still matches it by
   * its text among the messages written on an earlier connection.
   */
  #mayBeOurEcho(message2, username) {
    if (message2.userId === null) return message2.username === username;
    return this.#ownIds.has(message2.userId);
  }
  #rememberOwnId(userId) {
    if (userId === null) return;
    const ids = this.#ownIds;
    ids.delete(userId);
    ids.add(userId);
    if (ids.size > MAX_OWN_IDS) ids.delete(ids.values().next().value);
  }
  #raiseIfStopped() {
    if ((this.#state === "closed" || this.#state === "offline") && this.closed) throw new ClientClosedError(this.closed);
  }
};
function newRoom(room, username) {
  return {
    cursor: new RoomCursor(room),
    liveOn: null,
    joinSentOn: null,
    joinId: null,
    lastJoined: null,
    username,
    resumeTarget: null,
    lastTyping: -Infinity,
    waiters: /* @__PURE__ */ new Set(),
    kept: false,
    rejoinAttempt: 0,
    rejoinAt: null,
    rejoinTimer: null
  };
}
function cancelRejoin(state) {
  if (state.rejoinTimer !== null) clearTimeout(state.rejoinTimer);
  state.rejoinTimer = null;
}
function closedEvent(reason, code = null, status = null) {
  return { type: "closed", reason, code, status };
}
function signal() {
  let fire;
  const promise = new Promise((resolve) => fire = resolve);
  return { promise, fire };
}
function report(call) {
  try {
    call();
  } catch (error) {
    const reportError = globalThis.reportError;
    if (typeof reportError === "function") reportError(error);
    else setTimeout(() => {
      throw error;
    });
  }
}

// src/tokens.ts
function tokenFromUrl(url, options = {}) {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  return async () => {
    const answer = await doFetch(url, {
      method: "GET",
      headers: { Accept: "application/json, text/plain", ...options.headers },
      credentials: options.credentials ?? "same-origin",
      cache: "no-store",
      signal: AbortSignal.timeout(options.timeout ?? 1e4)
    });
    if (!answer.ok) throw new Error(`the token URL answered ${answer.status}`);
    return parseTokenAnswer(await answer.text(), answer.headers.get("content-type") ?? "");
  };
}
function parseTokenAnswer(body, contentType) {
  let token = body.trim();
  if (contentType.split(";")[0].trim().toLowerCase() === "application/json") {
    const data = JSON.parse(body);
    token = data !== null && typeof data === "object" ? data.token : void 0;
  }
  if (typeof token !== "string" || token === "" || /\s/.test(token)) {
    throw new Error("the token URL answered no token");
  }
  return token;
}
export {
  Backoff,
  ClientClosedError,
  CloseCode,
  ErrorCode,
  FATAL_CLOSE_CODES,
  FATAL_HTTP_STATUSES,
  JoinError,
  LossReason,
  Outgoing,
  RecoveryStatus,
  RequestError,
  RoomCursor,
  RoomcastClient,
  SendError,
  TimeoutError,
  parseEvent,
  parseTokenAnswer,
  tokenFromUrl
};
