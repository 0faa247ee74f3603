// The package's weight in a browser: the bundle minified by esbuild, then gzipped (level 9).
import { gzipSync } from "node:zlib";
import { bundle } from "./bundle.mjs";

const plain = await bundle();
const minified = await bundle({ minify: true, banner: {} });
const gzipped = gzipSync(minified, { level: 9 });
console.log(JSON.stringify({ bundleBytes: plain.length, minifiedBytes: minified.length, minifiedGzipBytes: gzipped.length }));
