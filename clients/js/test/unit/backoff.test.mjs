import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff } from "../../dist/index.js";

test("the bound doubles from the base up to the cap", () => {
  const backoff = new Backoff({ base: 500, cap: 10_000 });
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 60, 5000].map((a) => backoff.bound(a)), [0, 500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
});

test("full jitter: a delay is uniform between 0 and the bound", () => {
  const low = new Backoff({ base: 500, cap: 10_000, random: () => 0 });
  const high = new Backoff({ base: 500, cap: 10_000, random: () => 0.999999 });
  for (let attempt = 1; attempt < 12; attempt += 1) {
    assert.equal(low.delay(attempt), 0);
    assert.ok(high.delay(attempt) > 0.999 * low.bound(attempt) && high.delay(attempt) < low.bound(attempt));
  }
  const real = new Backoff({ base: 500, cap: 10_000 });
  const samples = Array.from({ length: 2000 }, () => real.delay(4));
  assert.ok(Math.min(...samples) < 400 && Math.max(...samples) > 3600, "spread over the whole window");
  assert.ok(samples.every((d) => d >= 0 && d < 4000));
});

test("the defaults are the Python client's: 0.5 s doubling to 30 s", () => {
  const backoff = new Backoff();
  assert.equal(backoff.bound(1), 500);
  assert.equal(backoff.bound(100), 30_000);
  assert.throws(() => new Backoff({ base: 0 }), RangeError);
  assert.throws(() => new Backoff({ base: 2000, cap: 1000 }), RangeError);
});
