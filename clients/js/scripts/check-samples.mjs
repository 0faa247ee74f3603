// Type-check every ```ts block of the documentation (docs/**/*.md, README.md) against this
// package's sources: each block becomes test/.samples/sample_N.ts, then `tsc --noEmit` runs
// over them with test/tsconfig.samples.json ("roomcast-client" resolves to src/index.ts).
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const out = fileURLToPath(new URL("../test/.samples/", import.meta.url));

function pages(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? pages(path) : name.endsWith(".md") ? [path] : [];
  });
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
let count = 0;
for (const page of [...pages(join(root, "docs")), join(root, "README.md")]) {
  const text = readFileSync(page, "utf8");
  for (const match of text.matchAll(/^```ts\n([\s\S]*?)^```$/gm)) {
    const line = text.slice(0, match.index).split("\n").length;
    count += 1;
    writeFileSync(join(out, `sample_${count}.ts`), `// ${relative(root, page)}:${line}\n${match[1]}export {};\n`);
  }
}
if (count === 0) throw new Error("no ```ts sample found in the docs");
const tsc = fileURLToPath(new URL("../node_modules/typescript/bin/tsc", import.meta.url));
execFileSync(process.execPath, [tsc, "-p", fileURLToPath(new URL("../test/tsconfig.samples.json", import.meta.url))], { stdio: "inherit" });
console.log(`${count} TypeScript samples of the docs type-check`);
