// connect() against real daemons: finding them, TCP with its token, a daemon that never answers,
// a restart on the same socket, proxies, and a process that must exit without close().
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { AuthenticationFailed, DaemonUnavailable, connect } from "../dist/index.js";
import { BINDINGD, startDaemon } from "./support/daemon.mjs";

const CONFIG = "version: 1\nbindings:\n  CACHE: { type: kv }\n  GREETING: { type: var, value: hi }\n";

/** A free loopback port (closed again, so the daemon can take it). */
async function freePort() {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

/** Run `promise`, failing (instead of hanging the suite) if it has not settled within `ms`. */
async function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

let daemon;
let port;

before(async () => {
  port = await freePort();
  daemon = await startDaemon(CONFIG, { args: ["--listen", `127.0.0.1:${port}`] });
});

after(async () => {
  await daemon?.stop();
});

test("the unix endpoint is found by walking up from a subdirectory", async () => {
  const deep = `${daemon.dir}/src/handlers`;
  mkdirSync(deep, { recursive: true });
  const env = await connect({ cwd: deep });
  try {
    assert.equal(env.GREETING, "hi");
    await env.CACHE.put("walk", "up");
    assert.equal(await env.CACHE.get("walk"), "up");
  } finally {
    env.close();
  }
});

test("a TCP endpoint from BINDINGD_ENDPOINT sends the token found beside the config", async (t) => {
  const saved = process.env.BINDINGD_ENDPOINT;
  process.env.BINDINGD_ENDPOINT = `127.0.0.1:${port}`;
  t.after(() => {
    if (saved === undefined) delete process.env.BINDINGD_ENDPOINT;
    else process.env.BINDINGD_ENDPOINT = saved;
  });
  mkdirSync(`${daemon.dir}/app`, { recursive: true });
  const env = await connect({ cwd: `${daemon.dir}/app` });
  try {
    await env.CACHE.put("tcp", "ok");
    assert.equal(await env.CACHE.get("tcp"), "ok");
  } finally {
    env.close();
  }
});

test("a wrong or missing token is AuthenticationFailed saying where the token comes from", async () => {
  const token = readFileSync(`${daemon.dir}/.bindingd/token`, "utf8").trim();
  for (const given of [`${token}x`, undefined]) {
    // cwd "/" has no .bindingd/token, so `undefined` sends none.
    await assert.rejects(connect({ endpoint: `tcp://127.0.0.1:${port}`, token: given, cwd: "/" }), (error) => {
      assert.ok(error instanceof AuthenticationFailed, String(error));
      assert.equal(error.reason, "AUTH_FAILED");
      assert.match(error.message, given ? /wrong bearer token/ : /no bearer token/);
      assert.match(error.message, /\.bindingd\/token/);
      assert.doesNotMatch(error.message, new RegExp(token));
      return true;
    });
  }
});

test("a daemon that accepts but never answers is DaemonUnavailable within the timeout, not a hang", async () => {
  // Suspended as by Ctrl-Z: the kernel still accepts connections on its socket.
  const frozen = await startDaemon(CONFIG);
  frozen.child.kill("SIGSTOP");
  try {
    const started = Date.now();
    await within(
      20_000,
      assert.rejects(connect({ endpoint: frozen.endpoint }), (error) => {
        assert.ok(error instanceof DaemonUnavailable, String(error));
        assert.match(error.message, /did not answer within 10000 ms/);
        assert.match(error.message, /bindingd serve/);
        return true;
      }),
      "connect() to a suspended daemon",
    );
    assert.ok(Date.now() - started < 15_000);
  } finally {
    frozen.child.kill("SIGCONT");
    await frozen.stop();
  }
});

test("timeoutMs bounds the wait on a port that is not bindingd", async () => {
  const sockets = new Set();
  const silent = createServer((socket) => sockets.add(socket)); // accepts, never speaks HTTP/2
  silent.listen(0, "127.0.0.1");
  await once(silent, "listening");
  try {
    const endpoint = `127.0.0.1:${silent.address().port}`;
    await within(
      10_000,
      assert.rejects(connect({ endpoint, token: "t", timeoutMs: 300 }), (error) => {
        assert.ok(error instanceof DaemonUnavailable, String(error));
        assert.match(error.message, /did not answer within 300 ms/);
        return true;
      }),
      "connect() to a silent port",
    );
    await assert.rejects(connect({ endpoint, timeoutMs: 0 }), TypeError);
  } finally {
    for (const socket of sockets) socket.destroy(); // else this test process could not exit
    silent.close();
  }
});

test("an env keeps working after the daemon is restarted on the same socket", async () => {
  const first = await startDaemon(CONFIG);
  let second = null;
  const env = await connect({ endpoint: first.endpoint });
  try {
    await env.CACHE.put("restart", "before");
    first.child.kill("SIGTERM");
    await once(first.child, "exit");
    await assert.rejects(env.CACHE.get("restart"), DaemonUnavailable);
    second = spawn(BINDINGD, ["serve", "--log-level", "warning"], { cwd: first.dir, stdio: "ignore" });
    // Calls fail fast with DaemonUnavailable until the new daemon answers; then they work again.
    const deadline = Date.now() + 30_000;
    let value;
    for (;;) {
      try {
        value = await env.CACHE.get("restart");
        break;
      } catch (error) {
        assert.ok(error instanceof DaemonUnavailable, String(error));
        if (Date.now() > deadline) throw error;
        await new Promise((done) => setTimeout(done, 100));
      }
    }
    assert.equal(value, "before"); // the local store outlives the daemon
  } finally {
    env.close();
    if (second !== null && second.exitCode === null) {
      second.kill("SIGTERM");
      await once(second, "exit");
    }
    await first.stop();
  }
});

const DIST = fileURLToPath(new URL("../dist/index.js", import.meta.url));

test("a script that never calls close() exits on its own", async () => {
  // Worker code has no close(): after its last call, Node must be free to exit.
  const script = `
    const { connect } = await import(${JSON.stringify(DIST)});
    const env = await connect({ endpoint: process.argv[1] });
    await env.CACHE.put("exit", "1");
    console.log(await env.CACHE.get("exit"));
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script, daemon.endpoint], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  let out = "";
  let err = "";
  child.stdout.on("data", (chunk) => (out += chunk));
  child.stderr.on("data", (chunk) => (err += chunk));
  const [code, signal] = await once(child, "exit");
  clearTimeout(killer);
  assert.equal(signal, null, `the child had to be killed: it did not exit by itself (${err})`);
  assert.equal(code, 0, err);
  assert.equal(out.trim(), "1");
});

test(
  "a TCP endpoint on loopback is reached directly, never through an HTTP proxy from the environment",
  {},
  async (t) => {
    // A proxy that only records who came: with grpc_proxy/http_proxy set and no no_proxy, grpc-js
    // would send the CONNECT (and then the bearer token, in clear) to it.
    let visits = 0;
    const proxy = createServer((socket) => {
      visits += 1;
      socket.destroy();
    });
    proxy.listen(0, "127.0.0.1");
    await once(proxy, "listening");
    const saved = { grpc_proxy: process.env.grpc_proxy, no_proxy: process.env.no_proxy };
    process.env.grpc_proxy = `http://127.0.0.1:${proxy.address().port}`;
    delete process.env.no_proxy;
    t.after(() => {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
      proxy.close();
    });
    const env = await connect({ endpoint: `127.0.0.1:${port}`, cwd: daemon.dir, timeoutMs: 5_000 });
    try {
      await env.CACHE.put("proxy", "direct");
      assert.equal(await env.CACHE.get("proxy"), "direct");
    } finally {
      env.close();
    }
    assert.equal(visits, 0);
  },
);
