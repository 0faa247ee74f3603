// RoomcastClient: one WebSocket to a roomcast cluster that survives node deaths. The same
// contract as the Python client (roomcast.client.core), event-driven instead of a task:
//
// connect (token as a subprotocol), wait for `welcome`, rejoin every room with `since` (the
// last position seen), deliver each message once by offset; when the connection ends, wait a
// jittered, growing delay and start again, unless the server said we are at fault (close 1003,
// 1007, 1008, 1009), refused our credentials (HTTP 401/403, where the WebSocket implementation
// reports it), or closed with 4001 (token expired) when there is no token callback to renew it:
// then the client goes `offline` until `reconnect()`. A rejoin the node refuses for now
// (`rate_limited`: many clients of one address came back at once) is sent again on the same
// connection after the node's `retry_after` plus a full-jitter draw, still with `since`.

import { Backoff, type BackoffOptions } from "./backoff.js";
import { BUSY_HTTP_STATUSES, BUSY_RETRY_MS, CloseCode, ErrorCode, FATAL_CLOSE_CODES, FATAL_HTTP_STATUSES, RETRIED_JOIN_ERRORS } from "./codes.js";
import { RoomCursor, type Since } from "./cursor.js";
import { ClientClosedError, JoinError, LinkLost, RequestError, TimeoutError } from "./errors.js";
import {
  parseEvent,
  type ClosedEvent,
  type ConnectionState,
  type ErrorEvent,
  type EventOf,
  type EventType,
  type HistoryEvent,
  type JoinedEvent,
  type MessageEvent,
  type Member,
  type PresenceEvent,
  type RoomcastEvent,
  type SendFailedEvent,
  type ServerEvent,
  type WelcomeEvent,
} from "./events.js";
import { Outgoing, SendBook } from "./outgoing.js";
import { globalWebSocket, handshakeStatus, OPEN, type WebSocketConstructor, type WebSocketLike } from "./socket.js";

/** A token, or a function giving one (called before every connection and on `token_expiring`). */
export type TokenSource = string | (() => string | null | Promise<string | null>);

export interface ClientOptions {
  /** Connection token (JWT), offered as the subprotocol `roomcast.token.<jwt>`. */
  token?: TokenSource | null;
  /** Rooms joined at start (and rejoined after every reconnect). */
  rooms?: Iterable<string>;
  /**
   * Delays between attempts: default 500 ms doubling to 30 s, full jitter. They also space the
   * retries of a refused rejoin (`rejoining`): the error's `retry_after` (at most 600 s) plus a
   * draw up to the backoff's bound for that room's refusals in a row.
   */
  backoff?: Backoff | BackoffOptions;
  /** Milliseconds a connection must last for the next failure to restart the backoff (10000). */
  stableAfter?: number;
  /** Consecutive failed attempts after which the client goes offline; null: forever (default). */
  maxAttempts?: number | null;
  /** Milliseconds for the connection and the server's `welcome` (10000). */
  openTimeout?: number;
  /** Milliseconds to wait for the answer to a join, history or presence request (10000). */
  requestTimeout?: number;
  /** Messages that may wait for a connection; `send()` fails with `queue_full` beyond (1000). */
  maxUnsent?: number;
  /** Milliseconds a message may wait for a connection before it fails with `expired` (60000). */
  queueTimeout?: number;
  /** Milliseconds a written message may wait for its ack before it fails `unconfirmed` (30000). */
  confirmTimeout?: number;
  /** At most one typing notice per room per this many milliseconds (1000). */
  typingInterval?: number;
  /** The WebSocket class: the global one by default; in Node.js 20, `WebSocket` from `ws`. */
  WebSocket?: WebSocketConstructor;
}

export interface PendingMessage {
  id: number;
  room: string;
  text: string;
  /** `queued`: waiting for a connection; `sent`: written, waiting for the server's ack. */
  status: "queued" | "sent";
}

type Listener<T extends EventType> = (event: EventOf<T>) => void;
type AnyListener = (event: RoomcastEvent) => void;

// A retry_after longer than this is taken as this: a broken or hostile server must not park a
// client for days (roomcast.client.backoff.MAX_RETRY_AFTER in Python).
const MAX_RETRY_AFTER_MS = 600_000;
// The userIds of our own connections remembered to tell our own messages (see isOwn).
const MAX_OWN_IDS = 256;
// Frames are at most this big until the server's welcome says otherwise (its default).
const DEFAULT_MAX_FRAME_BYTES = 65_536;
const encoder = new TextEncoder();

interface Link {
  serial: number;
  ws: WebSocketLike;
  welcome: WelcomeEvent | null;
  openedAt: number;
  httpStatus: number | null;
  openTimer: ReturnType<typeof setTimeout> | null;
}

interface Waiter<T> {
  resolve: (value: T) => void;
  reject: (error: Error) => void;
}

interface RoomState {
  cursor: RoomCursor;
  /** Serial of the connection on which the room is joined (null: not joined there yet). */
  liveOn: number | null;
  joinSentOn: number | null;
  joinId: string | null;
  lastJoined: JoinedEvent | null;
  /** The name the server gave us in this room (tokens fix it). */
  username: string;
  /** After a resume, the offset the replay runs up to. */
  resumeTarget: number | null;
  lastTyping: number;
  waiters: Set<Waiter<JoinedEvent>>;
  /** The client joins it by itself (given at start, or joined once): a refusal for now is retried. */
  kept: boolean;
  /** Refusals in a row: the rejoin backoff's exponent. */
  rejoinAttempt: number;
  /** No join of it is sent before this time (ms since the epoch), after a refusal. */
  rejoinAt: number | null;
  rejoinTimer: ReturnType<typeof setTimeout> | null;
}

interface PendingRequest {
  room: string;
  resolve: (event: ServerEvent) => void;
  reject: (error: Error) => void;
}

export class RoomcastClient {
  readonly url: string;
  readonly username: string;
  /** Why the client stopped, while `offline` or `closed`. */
  closed: ClosedEvent | null = null;
  /** Failed or lost connections in a row: the backoff's exponent. */
  attempt = 0;
  /** When the next attempt starts (ms since the epoch), while waiting for it. */
  retryAt: number | null = null;

  readonly #token: { source: TokenSource | null };
  readonly #backoff: Backoff;
  readonly #stableAfter: number;
  readonly #maxAttempts: number | null;
  readonly #openTimeout: number;
  readonly #requestTimeout: number;
  readonly #typingInterval: number;
  readonly #WebSocket: WebSocketConstructor;
  readonly #book: SendBook;
  readonly #rooms = new Map<string, RoomState>();
  readonly #requests = new Map<string, PendingRequest>();
  readonly #listeners = new Map<string, Set<(event: never) => void>>();
  readonly #anyListeners = new Set<AnyListener>();
  #state: ConnectionState = "idle";
  #link: Link | null = null;
  #serial = 0;
  #nextMessageId = 0;
  #nextRequestId = 0;
  #retryTimer: ReturnType<typeof setTimeout> | null = null;
  #expireTimer: ReturnType<typeof setInterval> | null = null;
  #hasConnected = false;
  #maxFrameBytes = DEFAULT_MAX_FRAME_BYTES;
  // The userId of each of our connections (open mode gives each its own), the latest last.
  #ownIds = new Set<string>();
  #changed = signal();

  constructor(url: string, username: string, options: ClientOptions = {}) {
    if (!/^wss?:\/\//i.test(url)) throw new TypeError(`not a WebSocket URL: ${JSON.stringify(url)}`);
    const WebSocketClass = options.WebSocket ?? globalWebSocket();
    if (WebSocketClass === null) {
      throw new TypeError("no global WebSocket here: pass { WebSocket } (e.g. from the ws package)");
    }
    this.url = url;
    this.username = username;
    this.#token = { source: options.token ?? null };
    this.#backoff = options.backoff instanceof Backoff ? options.backoff : new Backoff(options.backoff);
    this.#stableAfter = options.stableAfter ?? 10_000;
    this.#maxAttempts = options.maxAttempts ?? null;
    this.#openTimeout = options.openTimeout ?? 10_000;
    this.#requestTimeout = options.requestTimeout ?? 10_000;
    this.#typingInterval = options.typingInterval ?? 1_000;
    this.#WebSocket = WebSocketClass;
    this.#book = new SendBook(options.maxUnsent ?? 1000, options.queueTimeout ?? 60_000, options.confirmTimeout ?? 30_000);
    for (const room of options.rooms ?? []) this.#rooms.set(room, { ...newRoom(room, username), kept: true });
  }

  // Events

  /** Call `listener` for every event of `type`; returns the function that removes it. */
  on<T extends EventType>(type: T, listener: Listener<T>): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(listener as (event: never) => void);
    return () => set.delete(listener as (event: never) => void);
  }

  /** Call `listener` for every event, of every type. */
  onEvent(listener: AnyListener): () => void {
    this.#anyListeners.add(listener);
    return () => this.#anyListeners.delete(listener);
  }

  // Lifecycle

  /** Start connecting (also done by `join()` and `send()`' callers through `start()` once). */
  start(): this {
    if (this.#state === "idle") {
      this.#expireTimer = setInterval(() => this.#expire(), Math.max(50, Math.min(this.#book.queueTimeout, this.#book.confirmTimeout) / 10));
      this.#connect();
    }
    return this;
  }

  /** Stop for good: what is queued or in flight fails with `stopped`; a `closed` event follows. */
  async close(): Promise<void> {
    if (this.#state === "closed") return;
    this.#stopLink("closed by the application");
    if (this.#expireTimer !== null) clearInterval(this.#expireTimer);
    this.#expireTimer = null;
    const closed = closedEvent("closed by the application");
    this.#emitAll(this.#book.failAll("stopped"));
    this.#goOffline(closed, "closed");
  }

  /** Stop connecting (e.g. the application goes to the background); `reconnect()` resumes. */
  disconnect(reason = "disconnected by the application"): void {
    if (this.#state === "closed" || this.#state === "offline") return;
    this.#stopLink(reason);
    this.#goOffline(closedEvent(reason), "offline");
  }

  /** Connect now: from `offline`, or instead of waiting out the current backoff delay. */
  reconnect(): void {
    if (this.#state === "offline") {
      this.closed = null;
      this.attempt = 0;
      this.#connect();
    } else if (this.#state === "reconnecting" && this.#link === null) {
      this.#connect();
    }
  }

  /** Give the server a fresh token on the open connection (and use it for the next ones). */
  async refresh(token?: string): Promise<void> {
    if (token !== undefined && typeof this.#token.source !== "function") this.#token.source = token;
    const fresh = token ?? (await this.#resolveToken());
    const link = this.#link;
    if (fresh === null || link?.welcome == null) return;
    this.#write(link, { type: "refresh", token: fresh, id: this.#requestId("refresh") });
  }

  // State

  get state(): ConnectionState {
    return this.#state;
  }

  get connected(): boolean {
    return this.#link?.welcome != null;
  }

  /** The node of the current connection (from its `welcome`). */
  get node(): string | null {
    return this.#link?.welcome?.node ?? null;
  }

  get connectionId(): string | null {
    return this.#link?.welcome?.connection ?? null;
  }

  /** Our own `userId` on the current connection (from its `welcome`; null from an older server). */
  get userId(): string | null {
    return this.#link?.welcome?.userId ?? null;
  }

  /**
   * Whether an event about a user (`message`, `typing`, `user_joined`, `user_left`) is about us:
   * by its `userId` (any of this client's connections'), so a namesake's is not, nor one without
   * (a message the server API posted); by name only from a server that sends no `userId`. In
   * open mode each connection has its own id: a page loaded again does not know its earlier
   * messages as its own.
   */
  isOwn(event: { room: string; username: string; userId: string | null }): boolean {
    if (event.userId !== null) return this.#ownIds.has(event.userId);
    if (this.#ownIds.size > 0) return false;
    return event.username === (this.#rooms.get(event.room)?.username ?? this.username);
  }

  /** The largest frame the server accepts (its `welcome` says; 65536 until then). */
  get maxFrameBytes(): number {
    return this.#maxFrameBytes;
  }

  get unsentCount(): number {
    return this.#book.unsentCount;
  }

  get inFlightCount(): number {
    return this.#book.inFlightCount;
  }

  /** Messages waiting for a connection or for their ack, oldest first. */
  pending(): PendingMessage[] {
    return this.#book.pending().map(({ id, room, text, status }) => ({
      id,
      room,
      text,
      status: status === "sent" ? "sent" : "queued",
    }));
  }

  /** Rooms the client keeps joined. */
  rooms(): string[] {
    return [...this.#rooms.keys()];
  }

  /** Whether `room` is joined on the current connection. */
  isJoined(room: string): boolean {
    const state = this.#rooms.get(room);
    return state !== undefined && this.#link !== null && state.liveOn === this.#link.serial;
  }

  /** `{epoch, offset}` of the last message delivered in `room` (or of its join). */
  position(room: string): Since | null {
    return this.#rooms.get(room)?.cursor.since() ?? null;
  }

  duplicatesDropped(room: string): number {
    return this.#rooms.get(room)?.cursor.duplicatesDropped ?? 0;
  }

  /** Until a connection is up (its node id); rejects with ClientClosedError if it stopped. */
  async waitConnected(timeout?: number): Promise<string> {
    const deadline = Date.now() + (timeout ?? this.#requestTimeout);
    for (;;) {
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
  async join(room: string, { timeout }: { timeout?: number } = {}): Promise<JoinedEvent> {
    this.#raiseIfClosed();
    let state = this.#rooms.get(room);
    if (!state) this.#rooms.set(room, (state = newRoom(room, this.username)));
    const link = this.#link;
    if (link !== null && state.liveOn === link.serial && state.lastJoined !== null) return state.lastJoined;
    if (this.#state === "idle") this.start();
    const roomState = state;
    return new Promise<JoinedEvent>((resolve, reject) => {
      const timer = setTimeout(() => {
        roomState.waiters.delete(waiter);
        reject(new TimeoutError(`no answer to the join of ${JSON.stringify(room)} in time`));
      }, timeout ?? this.#requestTimeout);
      const waiter: Waiter<JoinedEvent> = {
        resolve: (value) => (clearTimeout(timer), resolve(value)),
        reject: (error) => (clearTimeout(timer), reject(error)),
      };
      roomState.waiters.add(waiter);
      const current = this.#link;
      // A refused rejoin waits its turn (rejoinTimer).
      if (current?.welcome != null && roomState.joinSentOn !== current.serial && roomState.rejoinTimer === null) {
        this.#sendJoin(current, room, roomState);
      }
    });
  }

  /** Leave `room`; what was queued for it fails with `left`. */
  async leave(room: string, { timeout }: { timeout?: number } = {}): Promise<void> {
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
  send(room: string, text: string): Outgoing {
    this.#raiseIfClosed();
    const state = this.#rooms.get(room);
    if (!state) throw new Error(`join ${JSON.stringify(room)} before sending to it`);
    this.#nextMessageId += 1;
    // A message ends the typing hint on the other side: the next keystroke announces again.
    state.lastTyping = -Infinity;
    const outgoing = new Outgoing(this.#nextMessageId, room, text, Date.now());
    const frame = { type: "message", room, text, id: outgoing.id };
    const size = encoder.encode(JSON.stringify(frame)).length;
    if (size > this.#maxFrameBytes) {
      // The server would close the connection (1009) for it: refuse it here instead.
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
  typing(room: string): boolean {
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
  async presence(
    room: string,
    { timeout, limit, after }: { timeout?: number; limit?: number; after?: string } = {},
  ): Promise<PresenceEvent> {
    const extra: Record<string, unknown> = {};
    if (limit !== undefined) extra.limit = limit;
    if (after !== undefined) extra.after = after;
    return (await this.#request(room, "presence", extra, timeout)) as PresenceEvent;
  }

  /**
   * Every member of `room`, page by page (`page` names each, 1000 at most): a name present for
   * the whole walk comes exactly once, one that comes or goes meanwhile at most once.
   */
  async *allMembers(room: string, { page = 1000, timeout }: { page?: number; timeout?: number } = {}): AsyncGenerator<Member> {
    let after: string | undefined;
    for (;;) {
      const answer = await this.presence(room, { limit: page, after, timeout });
      yield* answer.members;
      if (answer.next === null) return;
      after = answer.next;
    }
  }

  /** The last `limit` messages the server keeps for `room` (all kept by default), oldest first. */
  async history(room: string, limit?: number, { timeout }: { timeout?: number } = {}): Promise<HistoryEvent> {
    const extra = limit === undefined ? {} : { limit };
    return (await this.#request(room, "history", extra, timeout)) as HistoryEvent;
  }

  // The connection

  async #connect(): Promise<void> {
    this.#clearRetry();
    this.#setState(this.#hasConnected || this.attempt > 0 ? "reconnecting" : "connecting");
    let token: string | null;
    try {
      token = await this.#resolveToken();
    } catch (error) {
      this.#retry(`token: ${String(error)}`);
      return;
    }
    if (this.#state === "offline" || this.#state === "closed" || this.#link !== null) return;
    const protocols = ["roomcast"];
    // Not in the URL: proxies and servers log URLs, not subprotocol headers.
    if (token) protocols.push(`roomcast.token.${token}`);
    let ws: WebSocketLike;
    try {
      ws = new this.#WebSocket(this.url, protocols);
    } catch (error) {
      this.#retry(String(error));
      return;
    }
    this.#serial += 1;
    const link: Link = { serial: this.#serial, ws, welcome: null, openedAt: Date.now(), httpStatus: null, openTimer: null };
    this.#link = link;
    link.openTimer = setTimeout(() => {
      link.openTimer = null;
      if (link.welcome === null) this.#endLink(link, CloseCode.ABNORMAL, "no welcome from the server in time");
    }, this.#openTimeout);
    ws.addEventListener("message", (event: { data: unknown }) => this.#onFrame(link, event.data));
    ws.addEventListener("error", (event: unknown) => {
      link.httpStatus ??= handshakeStatus(event);
    });
    ws.addEventListener("close", (event: { code?: number; reason?: string }) =>
      this.#endLink(link, event.code ?? CloseCode.ABNORMAL, event.reason ?? ""),
    );
  }

  async #resolveToken(): Promise<string | null> {
    const source = this.#token.source;
    return typeof source === "function" ? await source() : source;
  }

  #onFrame(link: Link, data: unknown): void {
    if (this.#link !== link) return;
    if (typeof data !== "string") return; // the server sends text frames only
    const event = parseEvent(data);
    if (link.welcome === null) {
      if (link.openTimer !== null) clearTimeout(link.openTimer);
      link.openTimer = null;
      link.welcome =
        event.type === "welcome" ? event : { type: "welcome", node: "", connection: "", maxRooms: null, maxFrameBytes: null, userId: null };
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

  #endLink(link: Link, code: number, reason: string): void {
    if (this.#link !== link) return;
    this.#dropLink(link);
    try {
      link.ws.close(1000, "done");
    } catch {
      // already closing or closed
    }
    if (this.#state === "offline" || this.#state === "closed") return;
    if (link.httpStatus !== null && FATAL_HTTP_STATUSES.has(link.httpStatus)) {
      this.#goOffline(closedEvent(`handshake refused: HTTP ${link.httpStatus}`, null, link.httpStatus), "offline");
      return;
    }
    const fatal = FATAL_CLOSE_CODES.get(code);
    if (fatal !== undefined) {
      this.#emit({ type: "disconnected", code, reason, willReconnect: false });
      this.#goOffline(closedEvent(`closed by the server: ${fatal} (close ${code})`, code), "offline");
      return;
    }
    if (code === CloseCode.TOKEN_EXPIRED && typeof this.#token.source !== "function") {
      // A fixed token cannot renew itself: the next handshake would be refused (a browser
      // cannot even see that 401), so stop, as for the codes that mean we are at fault.
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
    // A busy node's 503 or an address's 429 (admission rates): not before BUSY_RETRY_MS, plus
    // the full jitter.
    this.#retry(cause, link.httpStatus !== null && BUSY_HTTP_STATUSES.has(link.httpStatus) ? BUSY_RETRY_MS : 0);
  }

  #retry(cause: string, floor = 0): void {
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

  #clearRetry(): void {
    if (this.#retryTimer !== null) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.retryAt = null;
  }

  #dropLink(link: Link): void {
    if (link.openTimer !== null) clearTimeout(link.openTimer);
    link.openTimer = null;
    if (this.#link === link) this.#link = null;
    for (const state of this.#rooms.values()) {
      if (state.liveOn === link.serial) state.liveOn = null;
      cancelRejoin(state); // the next connection rejoins (when its delay is over)
    }
    const lost = [...this.#requests.values()];
    this.#requests.clear();
    for (const request of lost) request.reject(new LinkLost("connection lost"));
    this.#signal();
  }

  #stopLink(reason: string): void {
    this.#clearRetry();
    const link = this.#link;
    if (link === null) return;
    this.#dropLink(link);
    try {
      link.ws.close(1000, reason.slice(0, 100));
    } catch {
      // already closing or closed
    }
  }

  #goOffline(closed: ClosedEvent, state: "offline" | "closed"): void {
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

  #dispatch(link: Link, event: ServerEvent): void {
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
        if (typeof this.#token.source === "function") void this.refresh().catch(() => undefined);
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

  #onMessage(link: Link, message: MessageEvent): void {
    const state = this.#rooms.get(message.room);
    if (!state) {
      this.#emit(message); // a room being left: its last messages are still news
      return;
    }
    const [deliver, gap] = state.cursor.accept(message);
    if (gap) this.#emit(gap);
    if (!deliver) return;
    if (this.#mayBeOurEcho(message, state.username) && this.#book.confirm(message, link.serial)) this.#emit({ type: "outbox" });
    this.#emit(message);
    this.#settleResume(link, message.room, state);
  }

  #onJoined(link: Link, joined: JoinedEvent): void {
    const state = this.#rooms.get(joined.room);
    this.#emit(joined);
    if (!state) return;
    if (!joined.already) {
      state.username = joined.username;
      const outcome = state.cursor.onJoined(joined);
      if (outcome) this.#emit(outcome);
      // After a resume, the replay runs up to the join's offset: an older message of ours not
      // echoed by then was lost with the old connection (or can no longer be known).
      state.resumeTarget = joined.recovered === true ? joined.offset : null;
      if (joined.recovered === false) this.#emitAll(this.#book.settleBefore(joined.room, link.serial));
    }
    state.liveOn = link.serial;
    state.lastJoined = joined;
    state.kept = true;
    state.rejoinAttempt = 0;
    state.rejoinAt = null;
    cancelRejoin(state);
    for (const waiter of state.waiters) waiter.resolve(joined);
    state.waiters.clear();
    for (const outgoing of this.#book.takeUnsent(joined.room)) this.#writeMessage(link, outgoing);
    this.#settleResume(link, joined.room, state);
    this.#emit({ type: "outbox" });
    this.#signal();
  }

  #settleResume(link: Link, room: string, state: RoomState): void {
    if (state.resumeTarget !== null && state.cursor.offset >= state.resumeTarget) {
      state.resumeTarget = null;
      const failures = this.#book.settleBefore(room, link.serial);
      if (failures.length) {
        this.#emitAll(failures);
        this.#emit({ type: "outbox" });
      }
    }
  }

  #onError(link: Link, error: ErrorEvent): void {
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
      const request = this.#requests.get(error.id)!;
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
  #unnamedRefusal(link: Link, error: ErrorEvent): void {
    const waiting = [...this.#rooms].filter(([, s]) => s.joinSentOn === link.serial && s.liveOn !== link.serial && s.joinId !== null);
    if (waiting.length === 0) return;
    const joins = waiting.map(([room, state]) => ({ room, state, joinId: state.joinId }));
    setTimeout(() => {
      if (this.#link !== link) return; // the next connection rejoins every room anyway
      for (const { room, state, joinId } of joins) {
        // That very join (its id), never answered.
        if (this.#rooms.get(room) !== state || state.joinId !== joinId || state.liveOn === link.serial) continue;
        state.rejoinAttempt += 1;
        const reason = `no answer to the join after: ${error.reason}`;
        this.#emit({ type: "rejoining", room, attempt: state.rejoinAttempt, delay: 0, code: error.code, reason });
        this.#sendJoin(link, room, state);
      }
    }, this.#requestTimeout);
  }

  #onJoinRefused(link: Link, room: string, state: RoomState, error: ErrorEvent): void {
    this.#emit(error);
    state.joinSentOn = null;
    state.joinId = null;
    if (error.code === ErrorCode.UNAVAILABLE) {
      // Redis is down for that node: try again later, from another connection.
      this.#endLink(link, CloseCode.NORMAL, "rejoin later");
      return;
    }
    if (RETRIED_JOIN_ERRORS.has(error.code) && state.kept) {
      // A room the client keeps by itself (a rejoin after a reconnect, a room given at start):
      // the refusal passes, so join again later; a join() waiting for it waits on (up to its
      // timeout). A room first asked by join() rejects it, as any refusal.
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
  #onRemoved(room: string, why: "removed" | "banned"): void {
    const state = this.#rooms.get(room);
    if (!state) return;
    this.#rooms.delete(room);
    cancelRejoin(state);
    this.#emitAll(this.#book.dropRoom(room, why));
    const code = why === "banned" ? ErrorCode.BANNED : ErrorCode.FORBIDDEN;
    const refusal: ErrorEvent = { type: "error", code, reason: why, room, id: null, retryAfter: null };
    for (const waiter of state.waiters) waiter.reject(new JoinError(refusal));
    state.waiters.clear();
    this.#emit({ type: "outbox" });
  }

  #answer(event: ServerEvent, id: unknown): void {
    if (typeof id !== "string") return;
    const request = this.#requests.get(id);
    if (!request) return;
    this.#requests.delete(id);
    request.resolve(event);
  }

  // Requests

  async #request(room: string, kind: "history" | "presence", extra: object, timeout?: number): Promise<ServerEvent> {
    const deadline = Date.now() + (timeout ?? this.#requestTimeout);
    for (;;) {
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

  #expect(room: string, kind: string, link: Link, extra: object, timeout?: number): Promise<ServerEvent> {
    const id = this.#requestId(kind);
    return new Promise<ServerEvent>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#requests.delete(id);
        reject(new TimeoutError(`no answer to ${kind} in time`));
      }, Math.max(0, timeout ?? this.#requestTimeout));
      this.#requests.set(id, {
        room,
        resolve: (event) => (clearTimeout(timer), resolve(event)),
        reject: (error) => (clearTimeout(timer), reject(error)),
      });
      this.#write(link, { type: kind, room, ...extra, id });
    });
  }

  #requestId(kind: string): string {
    this.#nextRequestId += 1;
    return `${kind}:${this.#nextRequestId}`;
  }

  // Frames out

  /**
   * Send the join of `room` again after the server's hint plus a full-jitter draw (growing with
   * each refusal in a row, at most the backoff's cap): the clients of one address refused together
   * come back spread out, not at one instant.
   */
  #delayJoin(link: Link, room: string, state: RoomState, error: ErrorEvent): void {
    state.rejoinAttempt += 1;
    const hint = Math.min(MAX_RETRY_AFTER_MS, error.retryAfter ?? 0);
    const delay = hint + this.#backoff.delay(state.rejoinAttempt);
    state.rejoinAt = Date.now() + delay;
    this.#emit({ type: "rejoining", room, attempt: state.rejoinAttempt, delay, code: error.code, reason: error.reason });
    this.#scheduleJoin(link, room, state, delay);
  }

  /** Join `room` on a new connection now, or when its refused rejoin's delay ends. */
  #joinWhenDue(link: Link, room: string, state: RoomState): void {
    const wait = state.rejoinAt === null ? 0 : state.rejoinAt - Date.now();
    if (wait > 0) this.#scheduleJoin(link, room, state, wait);
    else this.#sendJoin(link, room, state);
  }

  #scheduleJoin(link: Link, room: string, state: RoomState, delay: number): void {
    cancelRejoin(state);
    state.rejoinTimer = setTimeout(() => {
      state.rejoinTimer = null;
      // The connection ended (the next one rejoins) or the room was left: nothing to do.
      if (this.#link !== link || this.#rooms.get(room) !== state) return;
      if (state.liveOn !== link.serial && state.joinSentOn !== link.serial) this.#sendJoin(link, room, state);
    }, delay);
  }

  #sendJoin(link: Link, room: string, state: RoomState): void {
    const frame: Record<string, unknown> = { type: "join", room, username: this.username };
    const since = state.cursor.since();
    if (since !== null) frame.since = since;
    frame.id = state.joinId = this.#requestId("join");
    state.joinSentOn = link.serial;
    this.#write(link, frame);
  }

  #writeMessage(link: Link, outgoing: Outgoing): void {
    const frame = { type: "message", room: outgoing.room, text: outgoing.text, id: outgoing.id };
    if (this.#write(link, frame)) this.#book.written(outgoing, link.serial, Date.now());
    else this.#book.putBack(outgoing);
  }

  #write(link: Link, frame: object): boolean {
    if (this.#link !== link || link.ws.readyState !== OPEN) return false;
    link.ws.send(JSON.stringify(frame));
    return true;
  }

  // Helpers

  #expire(): void {
    const failures = this.#book.expire(Date.now());
    if (failures.length) {
      this.#emitAll(failures);
      this.#emit({ type: "outbox" });
    }
  }

  #setState(state: ConnectionState): void {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    this.#emit({ type: "state", state, previous });
  }

  #emit(event: RoomcastEvent): void {
    for (const listener of [...(this.#listeners.get(event.type) ?? [])]) report(() => (listener as AnyListener)(event));
    for (const listener of [...this.#anyListeners]) report(() => listener(event));
  }

  #emitAll(events: Iterable<SendFailedEvent>): void {
    for (const event of events) this.#emit(event);
  }

  #signal(): void {
    const previous = this.#changed;
    this.#changed = signal();
    previous.fire();
  }

  async #waitChange(deadline: number, what: string): Promise<void> {
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new TimeoutError(`no ${what} in time`);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(`no ${what} in time`)), remaining);
    });
    try {
      await Promise.race([this.#changed.promise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  #raiseIfClosed(): void {
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
  #mayBeOurEcho(message: MessageEvent, username: string): boolean {
    if (message.userId === null) return message.username === username;
    return this.#ownIds.has(message.userId);
  }

  #rememberOwnId(userId: string | null): void {
    if (userId === null) return;
    const ids = this.#ownIds;
    ids.delete(userId);
    ids.add(userId);
    // Bounded: one per connection; a client reconnecting for days forgets its oldest ones.
    if (ids.size > MAX_OWN_IDS) ids.delete(ids.values().next().value as string);
  }

  #raiseIfStopped(): void {
    if ((this.#state === "closed" || this.#state === "offline") && this.closed) throw new ClientClosedError(this.closed);
  }
}

function newRoom(room: string, username: string): RoomState {
  return {
    cursor: new RoomCursor(room),
    liveOn: null,
    joinSentOn: null,
    joinId: null,
    lastJoined: null,
    username,
    resumeTarget: null,
    lastTyping: -Infinity,
    waiters: new Set(),
    kept: false,
    rejoinAttempt: 0,
    rejoinAt: null,
    rejoinTimer: null,
  };
}

function cancelRejoin(state: RoomState): void {
  if (state.rejoinTimer !== null) clearTimeout(state.rejoinTimer);
  state.rejoinTimer = null;
}

function closedEvent(reason: string, code: number | null = null, status: number | null = null): ClosedEvent {
  return { type: "closed", reason, code, status };
}

function signal(): { promise: Promise<void>; fire: () => void } {
  let fire!: () => void;
  const promise = new Promise<void>((resolve) => (fire = resolve));
  return { promise, fire };
}

// A listener's exception is the application's bug: report it the way the platform reports an
// uncaught error, without breaking the client's own bookkeeping in the middle of a frame.
function report(call: () => void): void {
  try {
    call();
  } catch (error) {
    const reportError = (globalThis as { reportError?: (error: unknown) => void }).reportError;
    if (typeof reportError === "function") reportError(error);
    else setTimeout(() => {
      throw error;
    });
  }
}
