// Who is in the room: one entry per person, not per name.
//
// A username is a display name (two tokens may both say "Alice"; in open mode anyone types any
// name), so people are told apart by user_id: a presence answer's `userIds` says how many of a
// name's connections each user holds, and `user_joined`/`user_left` name theirs. A node of the
// release before user ids sends none: its members' connections stay counted under their name
// (the part of `connections` no user id accounts for), as before.

const byId = (userId) => `id:${userId}`;
const byName = (username) => `name:${username}`;

export class Presence {
  #people = new Map(); // key -> {username, userId, connections}
  // From a paged answer (big room): how many names the room has in all, and whether more
  // exist than were listed.
  #totalNames = null;
  #more = false;

  // A `presence` answer replaces everything known: it is the room as the server sees it now.
  replace(answer) {
    this.#people.clear();
    for (const member of answer.members) {
      let counted = 0;
      for (const [userId, connections] of Object.entries(member.userIds ?? {})) {
        this.#add(byId(userId), member.username, userId, connections);
        counted += connections;
      }
      if (member.connections > counted) this.#add(byName(member.username), member.username, null, member.connections - counted);
    }
    this.#totalNames = answer.totalMembers ?? null;
    this.#more = (answer.next ?? null) !== null;
  }

  joined({ username, userId }) {
    this.#add(userId ? byId(userId) : byName(username), username, userId ?? null, 1);
  }

  // One connection fewer. A leave whose join was told without a user id (or the other way
  // round: an old node's reaper announcing a new node's member) is matched by name.
  left({ username, userId }) {
    const key =
      (userId && this.#people.has(byId(userId)) && byId(userId)) ||
      (this.#people.has(byName(username)) && byName(username)) ||
      [...this.#people.keys()].find((candidate) => this.#people.get(candidate).username === username);
    if (!key) return;
    const person = this.#people.get(key);
    person.connections -= 1;
    if (person.connections <= 0) this.#people.delete(key);
  }

  // Everyone listed, by name, namesakes by user id (so their order is the same on every page).
  people() {
    return [...this.#people.values()].sort(
      (a, b) => a.username.localeCompare(b.username) || String(a.userId).localeCompare(String(b.userId)),
    );
  }

  // People listed, plus the names a big room's answer left for later pages.
  get count() {
    return this.#people.size + this.unlisted;
  }

  // How many names a big room's answer did not list.
  get unlisted() {
    if (!this.#more || this.#totalNames === null) return 0;
    return Math.max(0, this.#totalNames - new Set(this.people().map((person) => person.username)).size);
  }

  #add(key, username, userId, connections) {
    const person = this.#people.get(key);
    if (person) {
      person.connections += connections;
      person.username = username; // a token's newer name
    } else {
      this.#people.set(key, { username, userId, connections });
    }
  }
}
