import { FACTOR } from "./cluster.mjs";

/** The first event of `type` from `client` that satisfies `check`, within `timeout` ms (scaled). */
export function nextEvent(client, type, check = () => true, timeout = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event in time`));
    }, timeout * FACTOR);
    const off = client.on(type, (event) => {
      if (!check(event)) return;
      clearTimeout(timer);
      off();
      resolve(event);
    });
  });
}

/** Resolves once `condition()` is true, re-checked on each of `client`'s events. */
export function until(client, what, condition, timeout = 20_000) {
  return new Promise((resolve, reject) => {
    if (condition()) return resolve();
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${what}`));
    }, timeout * FACTOR);
    const off = client.onEvent(() => {
      if (!condition()) return;
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}
