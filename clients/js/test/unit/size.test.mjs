import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { sizes } from "../../scripts/size.mjs";

// The Development page says what the package weighs "at this commit": it said 7,595 bytes
// gzipped while the package had grown to 8,958. Within 2 %, so a small change needs no edit.
test("the sizes docs/development.md gives are the package's", async () => {
  const page = await readFile(new URL("../../../../docs/development.md", import.meta.url), "utf8");
  const given = page.match(/\*\*([\d.]+) KB\*\* \(([\d,]+) bytes; ([\d.]+) KB\s+minified, ([\d.]+) KB as the readable bundle/);
  assert.ok(given, "docs/development.md no longer gives the sizes in the expected words");
  const [gzipKb, gzipBytes, minifiedKb, bundleKb] = given.slice(1).map((n) => Number(n.replace(/,/g, "")));
  const measured = await sizes();
  const near = (stated, actual, what) =>
    assert.ok(Math.abs(stated - actual) <= 0.02 * actual, `${what}: the page says ${stated}, measured ${actual}`);
  near(gzipBytes, measured.minifiedGzipBytes, "gzipped bytes");
  near(gzipKb * 1000, measured.minifiedGzipBytes, "gzipped KB");
  near(minifiedKb * 1000, measured.minifiedBytes, "minified KB");
  near(bundleKb * 1000, measured.bundleBytes, "readable bundle KB");
});
