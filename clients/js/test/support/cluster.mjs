// A real cluster for the integration tests: redis-server, roomcast nodes and nginx on free
// loopback ports, started by the Python tooling the Python tests use (test/support/cluster.py).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const LAUNCHER = fileURLToPath(new URL("./cluster.py", import.meta.url));

/** Every wait scales with ROOMCAST_TEST_TIMEOUT_FACTOR, as in the Python tests. */
export const FACTOR = Number(process.env.ROOMCAST_TEST_TIMEOUT_FACTOR ?? "1") || 1;

/** The project's virtualenv (made by `make deps`), or ROOMCAST_PYTHON. */
export function python() {
  if (process.env.ROOMCAST_PYTHON) return process.env.ROOMCAST_PYTHON;
  const venv = `${ROOT}.venv/bin/python`;
  if (existsSync(venv)) return venv;
  throw new Error("no Python with roomcast's dependencies: run `make deps` at the repository root, or set ROOMCAST_PYTHON");
}

export async function startCluster(spec = {}) {
  const child = spawn(python(), [LAUNCHER, JSON.stringify(spec)], { cwd: ROOT, stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const next = async (what) => {
    const timer = new Promise((_, reject) => setTimeout(() => reject(new Error(`cluster: no ${what} in time`)), 60_000 * FACTOR).unref());
    const line = await Promise.race([lines.next(), timer, exited.then((code) => { throw new Error(`cluster launcher exited (${code})`); })]);
    if (line.done) throw new Error("cluster launcher ended");
    return JSON.parse(line.value);
  };
  const info = await next("start");
  return {
    ...info,
    /** SIGKILL one node (a child of the launcher, which this test started). */
    kill(node) {
      process.kill(node.pid, "SIGKILL");
    },
    async startNode(env = {}) {
      child.stdin.write(`${JSON.stringify({ start_node: env })}\n`);
      return next("node");
    },
    /** SIGKILL redis-server and start it again, empty (no persistence). */
    async restartRedis() {
      child.stdin.write(`${JSON.stringify({ restart_redis: true })}\n`);
      return next("redis restart");
    },
    /** SIGKILL the Sentinel primary (`sentinel: true`) and wait until a replica replaces it. */
    async failOver() {
      child.stdin.write(`${JSON.stringify({ fail_over: true })}\n`);
      return next("failover");
    },
    async stop() {
      child.stdin.end();
      await exited;
    },
  };
}
