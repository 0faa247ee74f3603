// Reconnect delays: exponential backoff with full jitter. A uniform draw between 0 and the
// exponential bound spreads the clients of a node that just died over the whole window, instead
// of bringing them all back at the same instants (roomcast.client.backoff in Python).

export interface BackoffOptions {
  /** Bound of the first delay, in milliseconds (default 500). */
  base?: number;
  /** No delay is longer, in milliseconds (default 30000). */
  cap?: number;
  /** A uniform draw in [0, 1): Math.random unless given (tests pass a seeded one). */
  random?: () => number;
}

export class Backoff {
  readonly base: number;
  readonly cap: number;
  readonly #random: () => number;

  constructor({ base = 500, cap = 30_000, random = Math.random }: BackoffOptions = {}) {
    if (!(base > 0 && base <= cap)) {
      throw new RangeError(`need 0 < base <= cap, got base=${base} cap=${cap}`);
    }
    this.base = base;
    this.cap = cap;
    this.#random = random;
  }

  /** The largest delay before attempt `attempt` (1: the first retry), in milliseconds. */
  bound(attempt: number): number {
    if (attempt < 1) return 0;
    // The exponent is capped so that a long outage cannot overflow to Infinity.
    return Math.min(this.cap, this.base * 2 ** Math.min(attempt - 1, 60));
  }

  /** A delay drawn uniformly in [0, bound(attempt)), in milliseconds. */
  delay(attempt: number): number {
    return this.#random() * this.bound(attempt);
  }
}
