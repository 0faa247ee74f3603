// The package as one ES module for the chat page, which nginx serves without a build step:
// loadbalancer/static/roomcast-client.js is this output, committed. `--check` fails when the
// committed file differs from what the sources build to (a test and `npm test` run it).
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
export const TARGET = fileURLToPath(new URL("../../../loadbalancer/static/roomcast-client.js", import.meta.url));

export async function bundle(options = {}) {
  const result = await build({
    entryPoints: [`${root}src/index.ts`],
    bundle: true,
    format: "esm",
    target: "es2022",
    platform: "neutral",
    write: false,
    legalComments: "none",
    banner: {
      js: "// Built from clients/js/src by `make js-bundle` (npm run build): do not edit by hand.",
    },
    ...options,
  });
  return result.outputFiles[0].text;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const built = await bundle();
  if (process.argv.includes("--check")) {
    const committed = await readFile(TARGET, "utf8").catch(() => "");
    if (committed !== built) {
      console.error(`${TARGET} is not what clients/js/src builds to: run \`make js-bundle\` and commit it`);
      process.exit(1);
    }
    console.log(`${TARGET}: up to date`);
  } else {
    await writeFile(TARGET, built);
    console.log(`wrote ${TARGET} (${built.length} bytes)`);
  }
}
