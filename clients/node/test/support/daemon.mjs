// A real bindingd daemon for a test: its own project directory, config and unix socket.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

const REPO = resolve(fileURLToPath(new URL("../../../..", import.meta.url)));
/** The daemon's command: $BINDINGD (set by `make node-test`), else the repo's virtualenv. */
export const BINDINGD = process.env.BINDINGD || join(REPO, ".venv", "bin", "bindingd");

/**
 * Start `bindingd serve` on `config` (YAML text) in a fresh directory and wait until it writes
 * its endpoint. Returns { dir, endpoint, stop }; `stop()` ends the daemon and removes the dir.
 */
export async function startDaemon(config, { args = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "bindingd-node-"));
  writeFileSync(join(dir, "bindingd.yaml"), config);
  const child = spawn(BINDINGD, ["serve", "--log-level", "warning", ...args], {
    cwd: dir,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const endpointFile = join(dir, ".bindingd", "endpoint");
  const deadline = Date.now() + 30_000;
  while (!existsSync(endpointFile) || !readFileSync(endpointFile, "utf8").trim()) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`bindingd did not start (exit ${child.exitCode}): ${stderr}`);
    }
    await sleep(50);
  }
  const endpoint = readFileSync(endpointFile, "utf8").trim();
  const stop = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((done) => child.once("exit", done));
      child.kill("SIGTERM");
      const grace = new AbortController();
      await Promise.race([exited, sleep(10_000, undefined, { signal: grace.signal }).catch(() => {})]);
      grace.abort();
      if (child.exitCode === null) child.kill("SIGKILL");
    }
    rmSync(dir, { recursive: true, force: true });
  };
  return { dir, endpoint, stop, child, stderr: () => stderr };
}
