// The page's choices on top of the client package's defaults (roomcast-client.js).

// A person is waiting: retry sooner than the library's 30 s cap (0.5 s doubling up to 10 s,
// full jitter below that bound).
export const BACKOFF = Object.freeze({ base: 500, cap: 10_000 });
// Messages shown on a first join.
export const RECENT_HISTORY = 50;
// The server allows 2 typing events/s; a keystroke announces typing at most this often.
export const TYPING_INTERVAL_MS = 1500;
