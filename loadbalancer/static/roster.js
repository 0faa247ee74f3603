// Keeps the room's presence list (presence.js) up to date from the client's events.
//
// A small room names each join and leave (`user_joined`, `user_left`). A big room, or one a
// client churns in, counts them instead (`presence_changed`: how many connections the room has
// now), and `"big": false` says names come again: either way the list is right only once asked
// again. A big room's answer comes from a snapshot up to one interval old (1 s by default), so
// it may predate the notice that made the page ask: while the answer's connections differ from
// the notice's (counting the joins and leaves named since), the page asks again, a few times,
// later each time. Measured: the members of a room of 5 leaving (big from 3), the page's answer
// after the last notice listed 4 people where 1 was left, and nothing came to correct it.
//
// Every member gets every notice: asking at once would make a room of 10,000 send 10,000
// presence requests per notice. So a member asks after a random delay of up to 10 ms per
// connection in the room (full jitter; 50 ms in a room of 5, 100 s at 10,000), one request
// pending at a time: about 200 requests a second for the whole room, whatever its size. The
// `"big": false` notice is answered at once: the room is small again.

import { Presence } from "./presence.js";

const RECHECK_BASE_MS = 500;
const SPREAD_MS_PER_CONNECTION = 10;
// 0.5 + 1 + 2 + 4 + 8 s: past the notice interval (1 s by default, longer above 5,000
// connections, where the next notice asks again anyway).
const RECHECKS = 5;

export class Roster {
  presence = new Presence();
  #client;
  #room;
  #changed;
  #loading = null;
  #askAgain = false;
  // The room's connections by its latest presence_changed, plus the joins and minus the leaves
  // named since; null once an answer agreed.
  #expected = null;
  #rechecks = 0;
  #timer = null;

  constructor(client, room, changed) {
    this.#client = client;
    this.#room = room;
    this.#changed = changed;
    const here = (listener) => (event) => event.room === room && listener(event);
    client.on("user_joined", here((event) => this.#apply(() => this.presence.joined(event), 1)));
    client.on("user_left", here((event) => this.#apply(() => this.presence.left(event), -1)));
    client.on(
      "presence_changed",
      here((event) => {
        this.#expected = event.connections;
        this.#rechecks = 0;
        if (event.big) this.#later(0);
        else this.reload();
      }),
    );
  }

  // Ask for the whole list (a big room: its first page and counts); one request at a time, and
  // one more after it when asked meanwhile. Settles when answered or lost with the connection
  // (the next join asks again).
  reload() {
    if (this.#loading) {
      this.#askAgain = true;
      return this.#loading;
    }
    this.#askAgain = false;
    this.#loading = this.#client
      .presence(this.#room)
      .then(
        (answer) => {
          this.presence.replace(answer);
          this.#changed();
          this.#recheckIfOld(answer);
        },
        () => undefined,
      )
      .finally(() => {
        this.#loading = null;
        if (this.#askAgain && this.#client.isJoined(this.#room)) this.reload();
      });
    return this.#loading;
  }

  // One reload pending at a time, at least `delay` ms and a jittered share of the room's size away.
  #later(delay) {
    if (this.#timer !== null) return;
    const spread = Math.random() * (this.#expected ?? 0) * SPREAD_MS_PER_CONNECTION;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.reload();
    }, Math.max(delay, spread));
  }

  #apply(change, connections) {
    change();
    if (this.#expected !== null) this.#expected += connections;
    this.#changed();
  }

  #recheckIfOld(answer) {
    const connections = answer.totalConnections ?? answer.members.reduce((sum, member) => sum + member.connections, 0);
    if (this.#expected === null || connections === this.#expected || this.#rechecks >= RECHECKS) {
      this.#expected = null;
      return;
    }
    this.#later(RECHECK_BASE_MS * 2 ** this.#rechecks);
    this.#rechecks += 1;
  }
}
