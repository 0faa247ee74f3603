// The package's weight in a browser: the bundle minified by esbuild, then gzipped (level 9).
// docs/development.md gives these figures; test/unit/size.test.mjs holds it to them.
import { gzipSync } from "node:zlib";
import { bundle } from "./bundle.mjs";

export async function sizes() {
  const plain = await bundle();
  const minified = await bundle({ minify: true, banner: {} });
  const gzipped = gzipSync(minified, { level: 9 });
  return { bundleBytes: plain.length, minifiedBytes: minified.length, minifiedGzipBytes: gzipped.length };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(await sizes()));
}
