// What a roomcast client sees: server frames parsed into typed events, and its own connection
// events (connected, reconnecting, resumed, gap, send_failed, closed, state). The names follow
// the Python client (roomcast.client.events); fields are camelCase where the wire's are not.
//
// Parsing never throws: a frame that is not JSON, not an object, of an unknown type or with
// fields of the wrong type becomes an `unknown` event holding the raw text, so a newer server
// (the protocol only grows) or a broken proxy cannot crash an application.

export type RequestId = string | number;

// Server → client

export interface WelcomeEvent {
  type: "welcome";
  node: string;
  connection: string;
  maxRooms: number | null;
  maxFrameBytes: number | null;
  /** Our own `userId`, as the events about us carry it (null from an older server). */
  userId: string | null;
}

/** Our join is done; `offset` is the room's latest offset at that moment. */
export interface JoinedEvent {
  type: "joined";
  room: string;
  username: string;
  epoch: string;
  offset: number;
  /** null for a plain join; true/false for a join with `since`. */
  recovered: boolean | null;
  /** Why a resume did not recover: `epoch_changed`, `too_old` or `overloaded`. */
  reason: string | null;
  /** The connection was already a member (the server then sends no position). */
  already: boolean;
  /** The role a room token gave us in this room, if any. */
  role: string | null;
  /**
   * A big room (docs/protocol.md "Big rooms"): no `user_joined`/`user_left`/`typing` there,
   * `presence_changed` instead; `connections` is then the room's size over every node.
   */
  big: boolean;
  connections: number | null;
  /** Our own `userId` in this room's events (null from an older server). */
  userId: string | null;
  /** The id of the request it answers, when it had one. */
  id: RequestId | null;
}

export interface LeftEvent {
  type: "left";
  room: string;
  /** The id of the request it answers, when it had one. */
  id: RequestId | null;
}

export interface UserJoinedEvent {
  type: "user_joined";
  room: string;
  username: string;
  /**
   * The author's id, told apart from a namesake's (docs/protocol.md): an opaque hash of the
   * token's `sub`, or a connection's own in open mode; null from a server that sends none.
   */
  userId: string | null;
}

export interface UserLeftEvent {
  type: "user_left";
  room: string;
  username: string;
  /**
   * The author's id, told apart from a namesake's (docs/protocol.md): an opaque hash of the
   * token's `sub`, or a connection's own in open mode; null from a server that sends none.
   */
  userId: string | null;
}

export interface MessageEvent {
  type: "message";
  room: string;
  username: string;
  text: string;
  /** The server's clock when it accepted the message, in ms since the Unix epoch. */
  timestamp: number;
  offset: number;
  epoch: string;
  /**
   * The author's id, told apart from a namesake's (docs/protocol.md): an opaque hash of the
   * token's `sub`, or a connection's own in open mode; null from a server that sends none.
   */
  userId: string | null;
  /**
   * The application deleted it (server API): history and resumes hold its tombstone at its
   * offset, with `username` and `text` empty and `timestamp` 0.
   */
  deleted: boolean;
}

/** The application disconnected us; the close follows (4002, or 4003: the client stops). */
export interface DisconnectEvent {
  type: "disconnect";
  reason: string;
  reconnect: boolean;
}

/** The application took us out of `room`: the client no longer counts it as joined. */
export interface RemovedEvent {
  type: "removed";
  room: string;
  reason: string;
}

/** Removed from `room`, and joins are refused (`banned`) until `until` (ms since the epoch). */
export interface BannedEvent {
  type: "banned";
  room: string;
  reason: string;
  until: number;
}

/** The message at `offset` was deleted: drop it from what you show. */
export interface MessageDeletedEvent {
  type: "message_deleted";
  room: string;
  epoch: string;
  offset: number;
}

/** Every message of `room` up to `upToOffset` left its history. */
export interface HistoryClearedEvent {
  type: "history_cleared";
  room: string;
  epoch: string;
  upToOffset: number;
}

export interface TypingEvent {
  type: "typing";
  room: string;
  username: string;
  /**
   * The author's id, told apart from a namesake's (docs/protocol.md): an opaque hash of the
   * token's `sub`, or a connection's own in open mode; null from a server that sends none.
   */
  userId: string | null;
}

export interface Member {
  username: string;
  connections: number;
  /**
   * Of those connections, how many each user under this name holds, by the `userId` the events
   * about them carry (namesakes are several users): a `user_joined` is matched to its entry by
   * `event.userId in member.userIds`. Connections whose id the server does not know (written by a
   * node of a release before user ids) are counted in `connections` only; empty from a server
   * that sends no ids.
   */
  userIds: Record<string, number>;
}

export interface PresenceEvent {
  type: "presence";
  room: string;
  members: Member[];
  /**
   * A page (asked with `limit`/`after`, or any answer in a big room): the whole room's counts,
   * and `next`, the `after` of the next page (null on the last). All null for a whole list.
   */
  totalMembers: number | null;
  totalConnections: number | null;
  next: string | null;
  /** The id of the request it answers, when it had one. */
  id: RequestId | null;
}

/**
 * A big room's joins and leaves since the previous one, instead of `user_joined`/`user_left`,
 * at most once per interval (1 s by default). `big` false: the room is small again and
 * per-member events resume (ask `presence` to resynchronise a member list).
 */
export interface PresenceChangedEvent {
  type: "presence_changed";
  room: string;
  joined: number;
  left: number;
  connections: number;
  big: boolean;
}

export interface HistoryEvent {
  type: "history";
  room: string;
  epoch: string;
  offset: number;
  messages: MessageEvent[];
  /** The id of the request it answers, when it had one. */
  id: RequestId | null;
}

/** A frame of ours was refused; the connection stays open. */
export interface ErrorEvent {
  type: "error";
  code: string;
  reason: string;
  room: string | null;
  /** The id of the frame it refuses, when that frame had one. */
  id: RequestId | null;
  /** Milliseconds until the same frame would pass, when the server says (its `retry_after`, a join over its rate). */
  retryAfter: number | null;
}

/** A message of ours (sent with `id`) was published at `offset`. */
export interface AckEvent {
  type: "ack";
  id: RequestId;
  room: string;
  epoch: string;
  offset: number;
}

/**
 * The server's notice that messages of `room` it acknowledged will never reach this connection:
 * offsets `fromOffset`..`toOffset` of `epoch` (`toOffset` null: to the end of that epoch, or up
 * to the next message). `reason`: `epoch_changed` (the room goes on in `newEpoch` from offset 1,
 * null while it has no message yet), `too_old` or `unavailable`. A `gap` event follows.
 */
export interface LossEvent {
  type: "loss";
  room: string;
  reason: string;
  epoch: string;
  fromOffset: number;
  toOffset: number | null;
  newEpoch: string | null;
}

/** The connection's token expires soon: refresh it before `closesAt` (ms since the epoch). */
export interface TokenExpiringEvent {
  type: "token_expiring";
  expiresAt: number;
  closesAt: number;
}

export interface RefreshedEvent {
  type: "refreshed";
  expiresAt: number;
  /** The id of the request it answers, when it had one. */
  id: RequestId | null;
}

/** Anything else: a type this client does not know, or a frame it could not read. */
export interface UnknownEvent {
  type: "unknown";
  /** The frame's own `type`, "" when it had none. */
  frameType: string;
  raw: string;
  data: Readonly<Record<string, unknown>> | null;
}

export type ServerEvent =
  | WelcomeEvent
  | JoinedEvent
  | LeftEvent
  | UserJoinedEvent
  | UserLeftEvent
  | MessageEvent
  | TypingEvent
  | PresenceEvent
  | PresenceChangedEvent
  | HistoryEvent
  | ErrorEvent
  | AckEvent
  | LossEvent
  | TokenExpiringEvent
  | RefreshedEvent
  | DisconnectEvent
  | RemovedEvent
  | BannedEvent
  | MessageDeletedEvent
  | HistoryClearedEvent
  | UnknownEvent;

// Client-side events: what happened to the connection itself

export interface ConnectedEvent {
  type: "connected";
  node: string;
  connection: string;
  /** 0: the first connection; n: after n failed or lost ones in a row. */
  attempt: number;
}

export interface DisconnectedEvent {
  type: "disconnected";
  /** The WebSocket close code; 1006 when the connection just died. */
  code: number;
  reason: string;
  willReconnect: boolean;
}

export interface ReconnectingEvent {
  type: "reconnecting";
  attempt: number;
  /** Milliseconds before the attempt. */
  delay: number;
  cause: string;
}

/**
 * The client's own join of `room` (a rejoin after a reconnect, or a room given at start) was
 * refused for now (`code`: `rate_limited`, `hook_unavailable`); it is sent again on the same
 * connection after `delay` ms (the server's `retry_after` plus a full-jitter draw), for as long
 * as the client runs. `attempt`: refusals in a row.
 */
export interface RejoiningEvent {
  type: "rejoining";
  room: string;
  attempt: number;
  /** Milliseconds before the join is sent again. */
  delay: number;
  code: string;
  reason: string;
}

/** A rejoin with `since` got every message missed: nothing lost, nothing repeated. */
export interface ResumedEvent {
  type: "resumed";
  room: string;
  epoch: string;
  /** The offset the client resumed after. */
  offset: number;
}

/**
 * Messages of `room` may have been missed; reload with `history()` if they matter. `reason`:
 * the server's `epoch_changed`, `too_old` or `overloaded` (of a rejoin, or of a `loss` notice,
 * which adds `unavailable`); or, seen by this client, `offsets_skipped`.
 */
export interface GapEvent {
  type: "gap";
  room: string;
  reason: string;
  epoch: string;
  /** The position the client continues from. */
  offset: number;
}

/**
 * A message given to `send()` is given up. `reason`: `queue_full`, `expired` (offline too
 * long), `too_big` (over the server's frame limit), `left`, `stopped` (the client closed): it
 * was never sent. `unconfirmed`: it was sent but never confirmed, so it may or may not have been
 * delivered. Any other reason is the server's error code (`rate_limited`, `unavailable`, ...).
 */
export interface SendFailedEvent {
  type: "send_failed";
  room: string;
  text: string;
  reason: string;
  messageId: number;
}

/**
 * The client stopped and will not reconnect by itself. `status` is the HTTP status of a refused
 * handshake (401, 403), `code` the close code of a connection closed for a fault of ours (1003,
 * 1007, 1008, 1009); both null after `close()`, `disconnect()` or when attempts ran out.
 */
export interface ClosedEvent {
  type: "closed";
  reason: string;
  code: number | null;
  status: number | null;
}

/**
 * `idle` (not started), `connecting` (first attempt), `connected` (welcome received),
 * `reconnecting` (waiting for, or making, another attempt), `offline` (stopped for a fault or by
 * `disconnect()`; `reconnect()` starts again), `closed` (`close()`: final).
 */
export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "offline" | "closed";

export interface StateEvent {
  type: "state";
  state: ConnectionState;
  previous: ConnectionState;
}

/** The messages waiting or in flight changed (see `client.pending()`). */
export interface OutboxEvent {
  type: "outbox";
}

export type ClientEvent =
  | ConnectedEvent
  | DisconnectedEvent
  | ReconnectingEvent
  | RejoiningEvent
  | ResumedEvent
  | GapEvent
  | SendFailedEvent
  | ClosedEvent
  | StateEvent
  | OutboxEvent;

export type RoomcastEvent = ServerEvent | ClientEvent;
export type EventType = RoomcastEvent["type"];
export type EventOf<T extends EventType> = Extract<RoomcastEvent, { type: T }>;

// Parsing

class BadField extends Error {}

type Data = Record<string, unknown>;

function str(data: Data, key: string): string {
  const value = data[key];
  if (typeof value !== "string") throw new BadField(key);
  return value;
}

function int(data: Data, key: string): number {
  const value = data[key];
  if (typeof value !== "number" || !Number.isSafeInteger(value)) throw new BadField(key);
  return value;
}

function optInt(data: Data, key: string): number | null {
  return data[key] === undefined || data[key] === null ? null : int(data, key);
}

function optStr(data: Data, key: string): string | null {
  return data[key] === undefined || data[key] === null ? null : str(data, key);
}

/**
 * A delay the server gives in seconds, in milliseconds; null when absent or not a finite number
 * >= 0 (a retry hint is advice: a frame must not become `unknown` for a bad one).
 */
function optMilliseconds(data: Data, key: string): number | null {
  const value = data[key];
  return typeof value === "number" && Number.isFinite(value) && value >= 0 ? value * 1000 : null;
}

function optBool(data: Data, key: string): boolean | null {
  const value = data[key];
  if (value === undefined || value === null) return null;
  if (typeof value !== "boolean") throw new BadField(key);
  return value;
}

function requestId(data: Data): RequestId | null {
  const value = data.id;
  if (typeof value === "string" || (typeof value === "number" && Number.isSafeInteger(value))) {
    return value;
  }
  return null;
}

function objects(data: Data, key: string): Data[] {
  const value = data[key];
  if (!Array.isArray(value) || !value.every((item) => item !== null && typeof item === "object")) {
    throw new BadField(key);
  }
  return value as Data[];
}

function userIds(data: Data): Record<string, number> {
  const value = data.user_ids;
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) throw new BadField("user_ids");
  const held = value as Data;
  // Own properties only, each a count: a frame must not hand the application anything else.
  return Object.fromEntries(Object.keys(held).map((id) => [id, int(held, id)]));
}

function message(d: Data): MessageEvent {
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
    deleted: false,
  };
}

function joined(d: Data): JoinedEvent {
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
    id: requestId(d),
  };
}

const PARSERS: Record<string, (d: Data) => ServerEvent> = {
  welcome: (d) => ({
    type: "welcome",
    node: str(d, "node"),
    connection: str(d, "connection"),
    maxRooms: optInt(d, "max_rooms"),
    maxFrameBytes: optInt(d, "max_frame_bytes"),
    userId: optStr(d, "user_id"),
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
      userIds: userIds(m),
    })),
    totalMembers: optInt(d, "total_members"),
    totalConnections: optInt(d, "total_connections"),
    next: optStr(d, "next"),
    id: requestId(d),
  }),
  presence_changed: (d) => ({
    type: "presence_changed",
    room: str(d, "room"),
    joined: int(d, "joined"),
    left: int(d, "left"),
    connections: int(d, "connections"),
    big: optBool(d, "big") === true,
  }),
  history: (d) => ({
    type: "history",
    room: str(d, "room"),
    epoch: str(d, "epoch"),
    offset: int(d, "offset"),
    messages: objects(d, "messages").map(message),
    id: requestId(d),
  }),
  error: (d) => ({
    type: "error",
    code: str(d, "code"),
    reason: str(d, "reason"),
    room: optStr(d, "room"),
    id: requestId(d),
    retryAfter: optMilliseconds(d, "retry_after"),
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
    newEpoch: optStr(d, "new_epoch"),
  }),
  token_expiring: (d) => ({
    type: "token_expiring",
    expiresAt: int(d, "expires_at"),
    closesAt: int(d, "closes_at"),
  }),
  refreshed: (d) => ({ type: "refreshed", expiresAt: int(d, "expires_at"), id: requestId(d) }),
  disconnect: (d) => ({ type: "disconnect", reason: str(d, "reason"), reconnect: optBool(d, "reconnect") === true }),
  removed: (d) => ({ type: "removed", room: str(d, "room"), reason: str(d, "reason") }),
  banned: (d) => ({ type: "banned", room: str(d, "room"), reason: str(d, "reason"), until: int(d, "until") }),
  message_deleted: (d) => ({
    type: "message_deleted",
    room: str(d, "room"),
    epoch: str(d, "epoch"),
    offset: int(d, "offset"),
  }),
  history_cleared: (d) => ({
    type: "history_cleared",
    room: str(d, "room"),
    epoch: str(d, "epoch"),
    upToOffset: int(d, "up_to_offset"),
  }),
};

/** One server frame as an event; never throws. */
export function parseEvent(raw: unknown): ServerEvent {
  const text = typeof raw === "string" ? raw : String(raw);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return { type: "unknown", frameType: "", raw: text, data: null };
  }
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    return { type: "unknown", frameType: "", raw: text, data: null };
  }
  const frame = data as Data;
  const kind = typeof frame.type === "string" ? frame.type : "";
  const parser = Object.hasOwn(PARSERS, kind) ? PARSERS[kind] : undefined;
  if (parser !== undefined) {
    try {
      return parser(frame);
    } catch (error) {
      if (!(error instanceof BadField)) throw error;
    }
  }
  return { type: "unknown", frameType: kind, raw: text, data: Object.freeze(frame) };
}
