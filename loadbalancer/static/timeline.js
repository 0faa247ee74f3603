// The room's messages in server order, each kept once.
//
// Messages arrive live, as the catch-up after a reconnect, and in `history` replies; these
// overlap, so (epoch, offset) is the identity. Offsets only compare within an epoch: a room whose
// history was lost on the server starts a new epoch at offset 1, shown after the old one.

export class Timeline {
  #entries = [];
  #keys = new Set();
  #epochOrder = new Map(); // epoch -> rank, in order of first appearance

  get entries() {
    return this.#entries;
  }

  // Returns the index the message now has, or -1 when it was already there.
  insert(message) {
    const key = `${message.epoch}:${message.offset}`;
    if (this.#keys.has(key)) return -1;
    if (!this.#epochOrder.has(message.epoch)) {
      this.#epochOrder.set(message.epoch, this.#epochOrder.size);
    }
    this.#keys.add(key);
    // Nearly always an append: search from the end.
    let index = this.#entries.length;
    while (index > 0 && this.#compare(this.#entries[index - 1], message) > 0) index -= 1;
    this.#entries.splice(index, 0, message);
    return index;
  }

  get(epoch, offset) {
    return this.#entries.find((entry) => entry.epoch === epoch && entry.offset === offset) ?? null;
  }

  // Entries of `epoch` up to `upTo` leave the timeline (the room's history was cleared); returns them.
  removeUpTo(epoch, upTo) {
    const gone = this.#entries.filter((entry) => entry.epoch === epoch && entry.offset <= upTo);
    if (gone.length === 0) return gone;
    this.#entries = this.#entries.filter((entry) => !gone.includes(entry));
    // Their keys stay: a late copy of a cleared message (a stale history reply) is not shown again.
    return gone;
  }

  #compare(a, b) {
    const byEpoch = this.#epochOrder.get(a.epoch) - this.#epochOrder.get(b.epoch);
    return byEpoch !== 0 ? byEpoch : a.offset - b.offset;
  }
}
