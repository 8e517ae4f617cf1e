// A real Switchboard for the Node tests: `python -m app` from this checkout, on a free port,
// stopped by its PID. TEST_PYTHON names the interpreter (default: the checkout's .venv).
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const API_KEY = "node-test-api-key-0123456789abcdef";

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export async function startSwitchboard(env = {}) {
  const port = await freePort();
  const python = process.env.TEST_PYTHON || join(root, ".venv", "bin", "python");
  const proc = spawn(python, ["-m", "app", "--host", "127.0.0.1", "--port", String(port)], {
    cwd: root,
    env: { ...process.env, SWITCHBOARD_DEV_MODE: "true", SWITCHBOARD_API_KEYS: API_KEY, ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  proc.stderr.on("data", (chunk) => (log = (log + chunk).slice(-4000)));
  const http = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`switchboard exited early:\n${log}`);
    try {
      if ((await fetch(`${http}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`switchboard not ready in 20 s:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    http,
    ws: `ws://127.0.0.1:${port}`,
    async token(sub) {
      const reply = await fetch(`${http}/dev/token`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sub }),
      });
      if (!reply.ok) throw new Error(`/dev/token: ${reply.status} ${await reply.text()}`);
      return (await reply.json()).token;
    },
    async api(method, body) {
      const reply = await fetch(`${http}/api/v1/${method}`, {
        method: "POST",
        headers: { "X-API-Key": API_KEY, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (!reply.ok) throw new Error(`${method}: ${reply.status} ${await reply.text()}`);
      return reply.json();
    },
    stop() {
      return new Promise((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.once("exit", resolve);
        process.kill(proc.pid, "SIGTERM");
      });
    },
  };
}

/** Resolves once `check()` is true; rejects after `ms`. */
export async function until(check, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not true within ${ms} ms: ${check}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The next `type` event of `target`, or a rejection after `ms`. */
export function next(target, type, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} event within ${ms} ms`)), ms);
    target.addEventListener(type, (e) => { clearTimeout(timer); resolve(e.detail); }, { once: true });
  });
}
