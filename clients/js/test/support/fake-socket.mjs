// A WebSocket stand-in for unit tests: records what the client sends and lets a test play the
// server (open, frames, close, a refused handshake) with no network at all.

export class FakeWebSocket {
  static instances = [];
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = FakeWebSocket.CONNECTING;
    this.sent = [];
    this.closedWith = null;
    this.listeners = { open: [], message: [], close: [], error: [] };
    FakeWebSocket.instances.push(this);
  }

  static reset() {
    FakeWebSocket.instances = [];
  }

  static get last() {
    return FakeWebSocket.instances.at(-1);
  }

  addEventListener(type, listener) {
    this.listeners[type].push(listener);
  }

  send(data) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error("not open");
    this.sent.push(JSON.parse(data));
  }

  close(code = 1000, reason = "") {
    if (this.readyState >= FakeWebSocket.CLOSING) return;
    this.readyState = FakeWebSocket.CLOSING;
    this.closedWith = { code, reason };
  }

  // The server's side

  frames(type) {
    return this.sent.filter((frame) => type === undefined || frame.type === type);
  }

  open(welcome = { type: "welcome", node: "node-1", connection: "c1", max_rooms: 16, max_frame_bytes: 65536 }) {
    this.readyState = FakeWebSocket.OPEN;
    this.#fire("open", {});
    if (welcome) this.receive(welcome);
    return this;
  }

  receive(frame) {
    this.#fire("message", { data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }

  /** The connection ends (the server closed it, or it just died: 1006). */
  drop(code = 1006, reason = "") {
    this.readyState = FakeWebSocket.CLOSED;
    this.#fire("close", { code, reason, wasClean: code !== 1006 });
  }

  /** A handshake refused with an HTTP status, as the `ws` package reports it. */
  refuse(status) {
    this.#fire("error", { message: `Unexpected server response: ${status}` });
    this.drop(1006);
  }

  #fire(type, event) {
    for (const listener of this.listeners[type]) listener(event);
  }
}

/** Let pending promise callbacks run (the client awaits its token before each connection). */
export async function flush() {
  for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setImmediate(resolve));
}

export function message(room, offset, text = `m${offset}`, { epoch = "e1", username = "bob" } = {}) {
  return { type: "message", room, username, text, timestamp: 1700000000000 + offset, offset, epoch };
}

export function joined(room, offset, extra = {}) {
  return { type: "joined", room, username: "ann", epoch: "e1", offset, ...extra };
}
