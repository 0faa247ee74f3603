// The chat page's headless-Chromium tests (tests/browser, pytest + Selenium + Debian's chromium):
// the page runs on this package, so `npm test` runs them too. They start their own clusters.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { python } from "../test/support/cluster.mjs";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const env = { ...process.env, PYTHONPATH: [`${root}node`, root, process.env.PYTHONPATH].filter(Boolean).join(":") };
const result = spawnSync(python(), ["-m", "pytest", "-q", "tests/browser"], { cwd: root, env, stdio: "inherit" });
process.exit(result.status ?? 1);
