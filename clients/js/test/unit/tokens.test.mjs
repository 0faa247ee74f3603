import assert from "node:assert/strict";
import { test } from "node:test";
import { parseTokenAnswer, tokenFromUrl } from "../../dist/index.js";

test("a token URL may answer JSON or the bare token; anything else is refused", () => {
  assert.equal(parseTokenAnswer('{"token":"a.b.c"}', "application/json; charset=utf-8"), "a.b.c");
  assert.equal(parseTokenAnswer("a.b.c\n", "text/plain"), "a.b.c");
  for (const [body, type] of [["{}", "application/json"], ['{"token":""}', "application/json"], ["", "text/plain"], ["a b", "text/plain"], ['{"token":7}', "application/json"]]) {
    assert.throws(() => parseTokenAnswer(body, type), /no token/, body);
  }
});

test("tokenFromUrl fetches a fresh token each time, with the page's credentials and headers", async () => {
  const calls = [];
  let served = 0;
  const fakeFetch = async (url, init) => {
    calls.push({ url, init });
    served += 1;
    return new Response(JSON.stringify({ token: `t${served}` }), { status: 200, headers: { "content-type": "application/json" } });
  };
  const source = tokenFromUrl("/roomcast/token", { fetch: fakeFetch, headers: { "X-CSRF": "1" } });
  assert.equal(await source(), "t1");
  assert.equal(await source(), "t2");
  assert.equal(calls[0].url, "/roomcast/token");
  assert.equal(calls[0].init.credentials, "same-origin");
  assert.equal(calls[0].init.headers["X-CSRF"], "1");
  const refused = tokenFromUrl("/t", { fetch: async () => new Response("no", { status: 401 }) });
  await assert.rejects(refused, /401/);
});
