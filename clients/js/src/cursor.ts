// Where a client is in a room's stream: the epoch and the last offset it delivered. This is what
// makes resume exactly-once: rejoin with `since` = this position, and never deliver an offset at
// or below it again, even if a server (or a bug) sent it twice (roomcast.client.cursor).

import type { GapEvent, JoinedEvent, LossEvent, MessageEvent, ResumedEvent } from "./events.js";

const LEFT_EPOCHS_KEPT = 4;

export interface Since {
  epoch: string;
  offset: number;
}

export class RoomCursor {
  readonly room: string;
  epoch: string | null = null;
  offset = 0;
  duplicatesDropped = 0;
  /** A loss notice already told of the hole before the next message (its end was unknown). */
  #holeAnnounced = false;
  /**
   * Where the client stood in the epoch an `epoch_changed` notice left while the new epoch had
   * no message yet (`newEpoch` null): a rejoin resumes from there, so that the server says what
   * the new epoch holds by then. A plain join would skip it in silence.
   */
  #left: Since | null = null;
  /**
   * The last offset delivered in each epoch an `epoch_changed` notice left (the last few): a
   * notice back into one of them (a primary that still held it is primary again) resumes after
   * that offset, as the server goes on from there.
   */
  #leftEpochs = new Map<string, number>();

  constructor(room: string) {
    this.room = room;
  }

  /** The `since` of a rejoin, or null when nothing was seen yet (a plain join). */
  since(): Since | null {
    if (this.epoch === null) return this.#left === null ? null : { ...this.#left };
    return { epoch: this.epoch, offset: this.offset };
  }

  /** Move to the join's position; say whether a resume kept the stream whole. */
  onJoined(joined: JoinedEvent): ResumedEvent | GapEvent | null {
    if (joined.already) return null;
    if (joined.recovered === true && joined.epoch === this.epoch) {
      return { type: "resumed", room: this.room, epoch: joined.epoch, offset: this.offset };
    }
    this.epoch = joined.epoch;
    this.offset = joined.offset;
    this.#left = null;
    if (joined.recovered === null) return null;
    // recovered false, or "recovered" into another epoch (which would be a server bug).
    return this.#gap(joined.reason ?? "epoch_changed");
  }

  /** Whether to deliver `message`, and the gap it reveals, if any. */
  accept(message: MessageEvent): [deliver: boolean, gap: GapEvent | null] {
    if (this.epoch === null) {
      // The first message seen, or the first of the epoch a loss notice announced (from offset 1).
      this.epoch = message.epoch;
      this.offset = message.offset;
      this.#left = null;
      return [true, null];
    }
    if (message.epoch !== this.epoch) {
      // The room's history was lost under a live connection (Redis restarted empty): offsets
      // start again, and whatever came before this one in the new epoch is unknown.
      this.epoch = message.epoch;
      this.offset = message.offset;
      this.#holeAnnounced = false;
      return [true, this.#gap("epoch_changed")];
    }
    if (message.offset <= this.offset) {
      this.duplicatesDropped += 1;
      return [false, null];
    }
    const gap = message.offset > this.offset + 1 && !this.#holeAnnounced ? this.#gap("offsets_skipped") : null;
    this.#holeAnnounced = false;
    this.offset = message.offset;
    return [true, gap];
  }

  /** The server gave up on some offsets: continue after them, and say so (once). */
  onLoss(loss: LossEvent): GapEvent | null {
    if (loss.reason === "epoch_changed") {
      if (this.epoch !== null && loss.epoch !== this.epoch) return null; // an epoch already left
      if (this.epoch !== null) this.#leave(this.epoch, this.offset);
      if (loss.newEpoch === null) {
        // The room has no message in its new epoch yet: the next one starts it; a rejoin
        // before it resumes from here.
        if (this.epoch !== null) this.#left = { epoch: this.epoch, offset: this.offset };
        this.epoch = null;
        this.offset = 0;
        return { type: "gap", room: this.room, reason: loss.reason, epoch: "", offset: 0 };
      }
      // The new epoch's messages follow from its offset 1 (or, back in an epoch left before,
      // from after the last one delivered in it): none of them is a gap.
      this.epoch = loss.newEpoch;
      this.offset = this.#leftEpochs.get(loss.newEpoch) ?? 0;
      this.#leftEpochs.delete(loss.newEpoch);
      return this.#gap(loss.reason);
    }
    if (this.epoch === null && loss.epoch !== "") {
      // The epoch the room started over in, named before any of its messages reached us (the
      // server's catch-up of it gave up, or found its start trimmed): its offsets count from 1,
      // and this notice is about the first of them.
      this.epoch = loss.epoch;
      this.offset = 0;
      this.#left = null;
    }
    if (loss.epoch !== this.epoch) return null;
    if (loss.toOffset === null) {
      this.#holeAnnounced = true; // up to the next message, whose offset ends the hole
    } else {
      this.offset = Math.max(this.offset, loss.toOffset);
    }
    return this.#gap(loss.reason);
  }

  #leave(epoch: string, offset: number): void {
    this.#leftEpochs.delete(epoch);
    this.#leftEpochs.set(epoch, offset);
    // As many as a node remembers (roomcast.broker.live_gaps).
    while (this.#leftEpochs.size > LEFT_EPOCHS_KEPT) this.#leftEpochs.delete(this.#leftEpochs.keys().next().value!);
  }

  #gap(reason: string): GapEvent {
    return { type: "gap", room: this.room, reason, epoch: this.epoch ?? "", offset: this.offset };
  }
}
