// Messages given to `send()`: queued while offline, written once, confirmed by the server's
// `ack` (roomcast.client.outgoing in Python).
//
// Each message goes out with the client's `id` for it; the server's `ack` names its offset (or
// an `error` with that id refuses it), so nothing is guessed. Only a message written on an
// earlier connection, whose ack was lost with it, is matched by its text in the replay a
// resume brings. A message is written at most once (resending one whose fate is unknown could
// duplicate it); one never written is kept, in order, until its room is joined again, and given
// up when the queue is full, when it waited too long, or when the client stops.

import type { AckEvent, ErrorEvent, MessageEvent, SendFailedEvent } from "./events.js";

/** Where a sent message landed in its room's stream. */
export interface Delivered {
  id: number;
  room: string;
  epoch: string;
  offset: number;
}

export type OutgoingStatus = "queued" | "sent" | "delivered" | "failed";

/** A message not delivered: `code` is the client's reason or the server's error code. */
export class SendError extends Error {
  override name = "SendError";
  readonly code: string;
  readonly room: string;
  readonly text: string;
  readonly messageId: number;

  constructor(failure: SendFailedEvent, detail?: string) {
    super(`message to ${JSON.stringify(failure.room)} not delivered: ${failure.reason}${detail ? ` (${detail})` : ""}`);
    this.code = failure.reason;
    this.room = failure.room;
    this.text = failure.text;
    this.messageId = failure.messageId;
  }
}

/**
 * A handle on one sent message. `await client.send(room, text)` gives its `Delivered` position
 * (the handle is a thenable) or throws a `SendError`; `outgoing.id` and `outgoing.status` can be
 * read before that.
 */
export class Outgoing implements PromiseLike<Delivered> {
  readonly id: number;
  readonly room: string;
  readonly text: string;
  readonly queuedAt: number;
  status: OutgoingStatus = "queued";
  /** Serial of the connection it was written to, and when. */
  writtenOn: number | null = null;
  writtenAt: number | null = null;
  readonly delivered: Promise<Delivered>;
  #resolve!: (value: Delivered) => void;
  #reject!: (error: SendError) => void;

  constructor(id: number, room: string, text: string, now: number) {
    this.id = id;
    this.room = room;
    this.text = text;
    this.queuedAt = now;
    this.delivered = new Promise<Delivered>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // A failure is also a `send_failed` event: an application that does not await every send
    // must not get an unhandled rejection (which ends a Node.js process) for it.
    this.delivered.catch(() => undefined);
  }

  get done(): boolean {
    return this.status === "delivered" || this.status === "failed";
  }

  then<A = Delivered, B = never>(
    onFulfilled?: ((value: Delivered) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.delivered.then(onFulfilled, onRejected);
  }

  resolve(epoch: string, offset: number): void {
    if (this.done) return;
    this.status = "delivered";
    this.#resolve({ id: this.id, room: this.room, epoch, offset });
  }

  fail(reason: string, detail?: string): SendFailedEvent {
    const failure: SendFailedEvent = {
      type: "send_failed",
      room: this.room,
      text: this.text,
      reason,
      messageId: this.id,
    };
    if (!this.done) {
      this.status = "failed";
      this.#reject(new SendError(failure, detail));
    }
    return failure;
  }
}

/** The messages not yet written (per room, in order) and those written but not acknowledged. */
export class SendBook {
  readonly maxUnsent: number;
  readonly queueTimeout: number;
  readonly confirmTimeout: number;
  readonly #unsent = new Map<string, Outgoing[]>();
  readonly #inFlight = new Map<string, Outgoing[]>();
  #unsentCount = 0;

  constructor(maxUnsent: number, queueTimeout: number, confirmTimeout: number) {
    this.maxUnsent = maxUnsent;
    this.queueTimeout = queueTimeout;
    this.confirmTimeout = confirmTimeout;
  }

  get unsentCount(): number {
    return this.#unsentCount;
  }

  get inFlightCount(): number {
    let count = 0;
    for (const queue of this.#inFlight.values()) count += queue.length;
    return count;
  }

  /** Every message not settled yet, oldest first. */
  pending(): Outgoing[] {
    const all = [...this.#unsent.values(), ...this.#inFlight.values()].flat();
    return all.sort((a, b) => a.id - b.id);
  }

  queue(outgoing: Outgoing): SendFailedEvent | null {
    if (this.#unsentCount >= this.maxUnsent) return outgoing.fail("queue_full", `${this.maxUnsent} messages already wait`);
    push(this.#unsent, outgoing.room, outgoing);
    this.#unsentCount += 1;
    return null;
  }

  hasUnsent(room: string): boolean {
    return (this.#unsent.get(room)?.length ?? 0) > 0;
  }

  takeUnsent(room: string): Outgoing[] {
    const taken = this.#unsent.get(room) ?? [];
    this.#unsent.delete(room);
    this.#unsentCount -= taken.length;
    return taken;
  }

  /** Return messages that could not be written, ahead of the ones queued since. */
  putBack(outgoing: Outgoing): void {
    if (outgoing.done) return;
    outgoing.status = "queued";
    const queue = this.#unsent.get(outgoing.room) ?? [];
    queue.unshift(outgoing);
    queue.sort((a, b) => a.id - b.id);
    this.#unsent.set(outgoing.room, queue);
    this.#unsentCount += 1;
  }

  written(outgoing: Outgoing, link: number, now: number): void {
    outgoing.status = "sent";
    outgoing.writtenOn = link;
    outgoing.writtenAt = now;
    push(this.#inFlight, outgoing.room, outgoing);
  }

  /** The server published our message `ack.id` at `ack.offset`. */
  acknowledge(ack: AckEvent): Outgoing | null {
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
  confirm(message: MessageEvent, link: number): Outgoing | null {
    const queue = this.#inFlight.get(message.room);
    const outgoing = queue?.find(
      (o) => o.writtenOn !== null && o.writtenOn < link && o.text === message.text,
    );
    if (!queue || !outgoing) return null;
    remove(queue, outgoing);
    outgoing.resolve(message.epoch, message.offset);
    return outgoing;
  }

  /** The server refused our message `error.id` (unavailable, rate_limited, ...). */
  refuse(error: ErrorEvent): SendFailedEvent | null {
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
  settleBefore(room: string, link: number): SendFailedEvent[] {
    const queue = this.#inFlight.get(room) ?? [];
    const stale = queue.filter((o) => o.writtenOn !== null && o.writtenOn < link);
    for (const outgoing of stale) remove(queue, outgoing);
    return stale.map((o) => o.fail("unconfirmed", "the connection was lost before the server confirmed it; it may or may not have been delivered"));
  }

  expire(now: number): SendFailedEvent[] {
    const failures: SendFailedEvent[] = [];
    for (const queue of this.#unsent.values()) {
      while (queue[0] && now - queue[0].queuedAt >= this.queueTimeout) {
        failures.push(queue.shift()!.fail("expired", "no connection in time"));
        this.#unsentCount -= 1;
      }
    }
    for (const queue of this.#inFlight.values()) {
      while (queue[0] && now - (queue[0].writtenAt ?? now) >= this.confirmTimeout) {
        failures.push(queue.shift()!.fail("unconfirmed", "no acknowledgement in time; it may or may not have been delivered"));
      }
    }
    return failures;
  }

  dropRoom(room: string, reason: string): SendFailedEvent[] {
    const unsent = this.takeUnsent(room);
    const inFlight = this.#inFlight.get(room) ?? [];
    this.#inFlight.delete(room);
    return [...unsent.map((o) => o.fail(reason)), ...inFlight.map((o) => o.fail("unconfirmed"))];
  }

  failAll(reason: string): SendFailedEvent[] {
    const rooms = new Set([...this.#unsent.keys(), ...this.#inFlight.keys()]);
    return [...rooms].flatMap((room) => this.dropRoom(room, reason));
  }
}

function push(map: Map<string, Outgoing[]>, room: string, outgoing: Outgoing): void {
  const queue = map.get(room);
  if (queue) queue.push(outgoing);
  else map.set(room, [outgoing]);
}

function remove(queue: Outgoing[], outgoing: Outgoing): void {
  const index = queue.indexOf(outgoing);
  if (index >= 0) queue.splice(index, 1);
}
