// One room over one WebSocket to /chat, kept alive: join, resume from the last message seen,
// an outbox for what is typed while offline, and reconnects with exponential backoff and full
// jitter. No DOM here: everything the page shows comes out through `onEvent(kind, data)`.

// Close codes after which reconnecting would only repeat the fault (README, close codes).
export const FATAL_CLOSE_CODES = new Map([
  [1003, "the server refused a binary frame"],
  [1007, "the server received invalid UTF-8"],
  [1008, "too many frames were sent (flood protection)"],
  [1009, "a frame was over the server's size limit"],
  // The page's token (from its URL) cannot renew itself: reconnecting would be refused.
  [4001, "your token expired: open the page again with a new one"],
]);

// Join refusals that a reconnect cannot fix: the name or the room has to change.
const FATAL_JOIN_ERRORS = new Set(["invalid_room", "invalid_username", "forbidden", "too_many_rooms"]);

export const BACKOFF_BASE_MS = 500;
export const BACKOFF_CAP_MS = 10000;
const TYPING_SEND_INTERVAL_MS = 1500; // the server allows 2 typing events/s
const RECENT_HISTORY = 50; // shown on a first join

// "Full jitter": uniform in [0, min(cap, base * 2^attempt)], so that the clients of a dead node
// do not all come back at the same instant (a fixed 3 s delay brings them back together).
export function backoffDelay(attempt, baseMs = BACKOFF_BASE_MS, capMs = BACKOFF_CAP_MS, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

const encoder = new TextEncoder();

export class RoomConnection {
  status = "idle"; // idle | connecting | connected | reconnecting | offline
  node = null;
  connectionId = null;
  attempt = 0; // failed attempts since the last successful join: the backoff exponent
  retryAt = null; // when the next attempt starts (ms since epoch), while waiting for it
  offlineReason = null;
  lastSeen = null; // {epoch, offset} of the newest message seen: where a rejoin resumes
  outbox = []; // {id, text, status: queued | sent | failed, reason}

  #url;
  #onEvent;
  #ws = null;
  #timer = null;
  #stopped = false;
  #hasConnected = false;
  #synced = false; // joined, and the catch-up (if any) has fully arrived
  #recovered = true; // whether the current join resumed without a gap
  #maxFrameBytes = 65536;
  #nextId = 1;
  #serial = 0; // counts connections: which one a message was sent on
  #lastTypingSent = 0;
  #typingTimer = null;

  constructor({ url, room, username, onEvent }) {
    this.#url = url;
    this.room = room;
    this.username = username; // the server's word (joined) replaces it: tokens fix the name
    this.#onEvent = onEvent;
  }

  start() {
    this.#open();
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#ws?.close(1000, "leaving");
  }

  reconnectNow() {
    if (this.#stopped || (this.#ws && this.#ws.readyState <= WebSocket.OPEN)) return;
    this.#open();
  }

  send(text) {
    const item = { id: this.#nextId++, text, status: "queued", reason: null };
    if (encoder.encode(JSON.stringify({ type: "message", text })).length > this.#maxFrameBytes) {
      item.status = "failed";
      item.reason = `longer than the server accepts (${this.#maxFrameBytes} bytes)`;
    }
    this.outbox.push(item);
    // The message ends the typing hint on the other side; the next keystroke starts a new one.
    clearTimeout(this.#typingTimer);
    this.#typingTimer = null;
    this.#lastTypingSent = 0;
    this.#flush();
    this.#emit("outbox");
  }

  retry(id) {
    const item = this.outbox.find((entry) => entry.id === id && entry.status === "failed");
    if (!item) return;
    item.status = "queued";
    item.reason = null;
    this.#flush();
    this.#emit("outbox");
  }

  discard(id) {
    this.outbox = this.outbox.filter((entry) => entry.id !== id);
    this.#emit("outbox");
  }

  // Throttled, with a trailing send: whoever keeps typing is announced again every interval.
  typing() {
    if (!this.#synced || this.#typingTimer !== null) return;
    const wait = this.#lastTypingSent + TYPING_SEND_INTERVAL_MS - Date.now();
    if (wait > 0) {
      this.#typingTimer = setTimeout(() => {
        this.#typingTimer = null;
        this.typing();
      }, wait);
      return;
    }
    this.#lastTypingSent = Date.now();
    this.#sendFrame({ type: "typing" });
  }

  // Socket lifecycle

  #open() {
    clearTimeout(this.#timer);
    this.#timer = null;
    this.retryAt = null;
    this.offlineReason = null;
    this.#setStatus(this.#hasConnected ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.#url);
    } catch (error) {
      this.#scheduleReconnect({ code: 0, reason: String(error) });
      return;
    }
    this.#ws = ws;
    this.#serial += 1;
    ws.addEventListener("open", () => ws === this.#ws && this.#join());
    ws.addEventListener("message", (event) => ws === this.#ws && this.#onFrame(event.data));
    ws.addEventListener("close", (event) => ws === this.#ws && this.#onClose(event));
  }

  #join() {
    // Frames are handled in order: the presence answer comes after the join's catch-up, so it
    // marks the moment the outbox can be resolved (see #onSynced).
    const join = { type: "join", room: this.room, username: this.username };
    if (this.lastSeen) join.since = this.lastSeen;
    this.#sendFrame(join);
    this.#sendFrame({ type: "presence", room: this.room });
    if (!this.lastSeen) this.#sendFrame({ type: "history", room: this.room, limit: RECENT_HISTORY });
  }

  #onClose(event) {
    this.#ws = null;
    this.#synced = false;
    if (this.#stopped) return;
    const fatal = FATAL_CLOSE_CODES.get(event.code);
    if (fatal) {
      this.#goOffline(`${fatal} (close ${event.code})`);
      return;
    }
    this.#scheduleReconnect(event);
  }

  #scheduleReconnect(event) {
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.#emit("closed", { code: event.code, reason: event.reason, delay });
    this.#setStatus("reconnecting");
    this.#timer = setTimeout(() => this.#open(), delay);
  }

  #goOffline(reason) {
    clearTimeout(this.#timer);
    this.retryAt = null;
    this.offlineReason = reason;
    const ws = this.#ws;
    this.#ws = null;
    this.#synced = false;
    ws?.close(1000, "giving up");
    this.#setStatus("offline");
  }

  // Frames from the server

  #onFrame(raw) {
    let data;
    try {
      data = JSON.parse(raw);
    } catch {
      return;
    }
    if (data === null || typeof data !== "object") return;
    if (data.room !== undefined && data.room !== this.room) return;
    switch (data.type) {
      case "welcome":
        this.node = data.node;
        this.connectionId = data.connection;
        this.#maxFrameBytes = data.max_frame_bytes ?? this.#maxFrameBytes;
        this.#hasConnected = true;
        this.#setStatus("connected");
        break;
      case "joined":
        this.#onJoined(data);
        break;
      case "message":
        this.#onMessage(data);
        break;
      case "history":
        this.#emit("history", { messages: data.messages.map((m) => this.#toMessage(m)) });
        break;
      case "presence":
        this.#emit("presence", { members: data.members });
        if (!this.#synced) this.#onSynced();
        break;
      case "typing":
        if (data.username !== this.username) this.#emit("typing", { username: data.username });
        break;
      case "user_joined":
      case "user_left":
        this.#emit(data.type, { username: data.username });
        break;
      case "error":
        this.#onError(data);
        break;
      case "ack":
        this.#onAck(data);
        break;
      case "loss":
        this.#onLoss(data);
        break;
      default:
        break; // a newer server's event: ignored, as the protocol promises
    }
  }

  #onJoined(data) {
    if (data.already) return;
    this.username = data.username;
    this.attempt = 0;
    const resumed = this.lastSeen !== null;
    this.#recovered = !resumed || data.recovered === true;
    if (!this.#recovered) {
      // The gap cannot be filled message by message: reload what the server still keeps.
      this.#sendFrame({ type: "history", room: this.room });
    }
    if (!resumed || !this.#recovered) this.lastSeen = { epoch: data.epoch, offset: data.offset };
    this.#emit("joined", {
      username: data.username,
      resumed,
      recovered: this.#recovered,
      reason: data.reason ?? null,
    });
  }

  // The server will never deliver some acknowledged messages of this room (Redis lost them, or
  // they fell out of history before this node could fill its gap): say so and reload history.
  #onLoss(data) {
    const seen = this.lastSeen;
    if (data.reason === "epoch_changed") {
      if (seen && seen.epoch !== data.epoch) return; // about an epoch already left
      // The new epoch's messages follow from offset 1; with none yet, the next one starts it.
      this.lastSeen = data.new_epoch ? { epoch: data.new_epoch, offset: 0 } : null;
    } else if (seen && seen.epoch === data.epoch && data.to_offset !== null) {
      this.lastSeen = { epoch: seen.epoch, offset: Math.max(seen.offset, data.to_offset) };
    }
    this.#emit("loss", {
      reason: data.reason,
      epoch: data.epoch,
      fromOffset: data.from_offset,
      toOffset: data.to_offset,
      newEpoch: data.new_epoch ?? null,
    });
    this.#sendFrame({ type: "history", room: this.room });
  }

  #onMessage(data) {
    const seen = this.lastSeen;
    if (seen && data.epoch === seen.epoch && data.offset <= seen.offset) return;
    this.lastSeen = { epoch: data.epoch, offset: data.offset };
    const message = this.#toMessage(data);
    if (message.own) this.#confirm(message.text);
    this.#emit("message", message);
  }

  #toMessage(data) {
    return {
      epoch: data.epoch,
      offset: data.offset,
      username: data.username,
      text: data.text,
      timestamp: data.timestamp,
      own: data.username === this.username,
    };
  }

  #onError(data) {
    const reason = String(data.reason ?? data.code);
    if (FATAL_JOIN_ERRORS.has(data.code)) {
      this.#goOffline(`the server refused to join: ${reason}`);
      return;
    }
    if (data.code === "unavailable" && reason.startsWith("cannot join")) {
      this.#emit("error", { code: data.code, reason });
      this.#ws?.close(1000, "join failed"); // and come back with backoff
      return;
    }
    if (data.code === "unavailable" && reason.startsWith("presence") && !this.#synced) {
      this.#onSynced();
      return;
    }
    if (reason.includes("message") && ["rate_limited", "unavailable"].includes(data.code)) {
      // The error names the message by the id it was sent with (older servers did not: then
      // frames are answered in order, so it is about the oldest message in flight).
      const item =
        this.outbox.find((entry) => entry.status === "sent" && entry.id === data.id) ??
        this.outbox.find((entry) => entry.status === "sent");
      if (item) {
        item.status = "failed";
        item.reason = reason;
        this.#emit("outbox");
        return;
      }
    }
    if (reason.includes("typing")) return; // a dropped typing hint is not worth a word
    this.#emit("error", { code: data.code, reason });
  }

  // Outbox: a message is "sent" until its own echo comes back with an offset.

  #onSynced() {
    this.#synced = true;
    for (const item of this.outbox) {
      if (item.status !== "sent") continue;
      if (this.#recovered) {
        // The catch-up had every message after the last one seen and its echo was not in it:
        // the server never published it, so sending it again cannot duplicate it.
        item.status = "queued";
      } else {
        item.status = "failed";
        item.reason = "the connection was lost before the server confirmed it; it may or may not have been sent";
      }
    }
    this.#flush();
    this.#emit("outbox");
  }

  // The server published our message: its ack names it by id, so nothing is guessed.
  #onAck(data) {
    const index = this.outbox.findIndex((entry) => entry.status === "sent" && entry.id === data.id);
    if (index < 0) return;
    this.outbox.splice(index, 1);
    this.#emit("outbox");
  }

  // A message sent on a connection that is gone lost its ack with it; if the resume's catch-up
  // brings its echo back, the text is all there is to recognise it by.
  #confirm(text) {
    const index = this.outbox.findIndex(
      (entry) => entry.status === "sent" && entry.sentOn !== this.#serial && entry.text === text,
    );
    if (index < 0) return;
    this.outbox.splice(index, 1);
    this.#emit("outbox");
  }

  #flush() {
    if (!this.#synced) return;
    for (const item of this.outbox) {
      if (item.status !== "queued") continue;
      if (!this.#sendFrame({ type: "message", room: this.room, text: item.text, id: item.id })) return;
      item.status = "sent";
      item.sentOn = this.#serial;
    }
  }

  #sendFrame(frame) {
    if (!this.#ws || this.#ws.readyState !== WebSocket.OPEN) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  #setStatus(status) {
    this.status = status;
    this.#emit("status");
  }

  #emit(kind, data = {}) {
    this.#onEvent(kind, data);
  }

  snapshot() {
    return {
      status: this.status,
      synced: this.#synced,
      node: this.node,
      connection: this.connectionId,
      room: this.room,
      username: this.username,
      attempt: this.attempt,
      retryAt: this.retryAt,
      offlineReason: this.offlineReason,
      lastSeen: this.lastSeen && { ...this.lastSeen },
      outbox: this.outbox.map((item) => ({ ...item })),
    };
  }
}
