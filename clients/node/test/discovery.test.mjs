// Finding the daemon safely, against real processes: a planted endpoint above the project or in
// a shared folder is not followed, the project's token goes only to its own daemon, and a daemon
// of another env than BINDINGD_ENV / { env } is refused. Run as root here: "another user" is
// uid 65534 (nobody), a shared folder is mode 1777.
import assert from "node:assert/strict";
import { once } from "node:events";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttp2Server } from "node:http2";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { DaemonUnavailable, WrongEnv, connect } from "../dist/index.js";
import { startDaemon } from "./support/daemon.mjs";

const NOBODY = 65534;
const CONFIG = "version: 1\nenv: dev\nbindings:\n  CACHE: { type: kv }\nenvs:\n  staging: {}\n";
const TOKEN = "the-project-token-0123456789";

/**
 * Someone else's listener: a plain HTTP/2 server that answers every call with a gRPC error and
 * keeps the headers it was sent (HPACK-decoded by node:http2).
 */
async function recorder() {
  const calls = [];
  const sessions = new Set();
  const server = createHttp2Server();
  server.on("session", (session) => sessions.add(session));
  server.on("stream", (stream, headers) => {
    calls.push(headers);
    stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "14", "grpc-message": "not bindingd" }, { endStream: true });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: server.address().port,
    calls,
    authorizations: () => calls.map((headers) => headers.authorization).filter((value) => value !== undefined),
    close: async () => {
      for (const session of sessions) session.destroy();
      server.close();
    },
  };
}

function withVariables(t, values) {
  const saved = {};
  for (const [name, value] of Object.entries(values)) {
    saved[name] = process.env[name];
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  t.after(() => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });
}

let root;
let planted;

before(async () => {
  root = mkdtempSync(join(tmpdir(), "bindingd-discovery-"));
  planted = await recorder();
});

after(async () => {
  await planted.close();
  rmSync(root, { recursive: true, force: true });
});

function shared(name) {
  const dir = join(root, name);
  mkdirSync(dir);
  chmodSync(dir, 0o1777);
  return dir;
}

function plant(folder, { owner = NOBODY, mode = 0o644 } = {}) {
  const state = join(folder, ".bindingd");
  mkdirSync(state);
  writeFileSync(join(state, "endpoint"), `127.0.0.1:${planted.port}\n`);
  writeFileSync(join(state, "token"), "planted\n");
  chmodSync(join(state, "endpoint"), mode);
  chownSync(join(state, "endpoint"), owner, owner);
  chownSync(state, owner, owner);
  return state;
}

function projectWithToken(dir) {
  mkdirSync(join(dir, ".bindingd"), { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, "bindingd.yaml"), CONFIG);
  writeFileSync(join(dir, ".bindingd", "token"), `${TOKEN}\n`, { mode: 0o600 });
}

test("a planted endpoint above the project is not followed", async (t) => {
  withVariables(t, { BINDINGD_ENDPOINT: undefined, BINDINGD_TOKEN: undefined, BINDINGD_ENV: undefined });
  const dir = shared("above");
  plant(dir);
  const project = join(dir, "project");
  projectWithToken(project);
  mkdirSync(join(project, "src"));
  for (const cwd of [project, join(project, "src")]) {
    await assert.rejects(connect({ cwd, timeoutMs: 2000 }), (error) => {
      assert.ok(error instanceof DaemonUnavailable, String(error));
      assert.match(error.message, new RegExp(`${join(project, ".bindingd")}`));
      return true;
    });
  }
  assert.equal(planted.calls.length, 0);
});

test("a planted endpoint in a shared folder is not followed outside a project", async (t) => {
  withVariables(t, { BINDINGD_ENDPOINT: undefined, BINDINGD_TOKEN: undefined, BINDINGD_ENV: undefined });
  const dir = shared("outside");
  const state = plant(dir);
  mkdirSync(join(dir, "somewhere", "deep"), { recursive: true });
  await assert.rejects(connect({ cwd: join(dir, "somewhere", "deep"), timeoutMs: 2000 }), (error) => {
    assert.ok(error instanceof DaemonUnavailable, String(error));
    assert.match(error.message, new RegExp(`not using ${state}: it belongs to uid ${NOBODY}`));
    return true;
  });
  assert.equal(planted.calls.length, 0);
});

test("an endpoint file others may write is not followed", async (t) => {
  withVariables(t, { BINDINGD_ENDPOINT: undefined, BINDINGD_TOKEN: undefined, BINDINGD_ENV: undefined });
  const dir = join(root, "writable");
  mkdirSync(dir);
  plant(dir, { owner: process.getuid(), mode: 0o666 });
  await assert.rejects(connect({ cwd: dir, timeoutMs: 2000 }), /mode 666/);
  assert.equal(planted.calls.length, 0);
});

test("the project's token does not go to a port that is not its daemon's", async (t) => {
  const project = join(root, "stopped");
  projectWithToken(project);
  withVariables(t, { BINDINGD_ENDPOINT: `127.0.0.1:${planted.port}`, BINDINGD_TOKEN: undefined, BINDINGD_ENV: undefined });
  await assert.rejects(connect({ cwd: project, timeoutMs: 1500 }), DaemonUnavailable);
  assert.ok(planted.calls.length > 0, "the client did not call the listener at all");
  assert.deepEqual(planted.authorizations(), [], "the project's token was sent");
  // BINDINGD_TOKEN given with the endpoint is the caller's own choice.
  process.env.BINDINGD_TOKEN = "chosen";
  await assert.rejects(connect({ cwd: project, timeoutMs: 1500 }), DaemonUnavailable);
  assert.deepEqual(planted.authorizations(), ["Bearer chosen"]);
});

test("the project's token reaches the project's own daemon on TCP", async (t) => {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  const daemon = await startDaemon(CONFIG, { args: ["--listen", `127.0.0.1:${port}`] });
  t.after(() => daemon.stop());
  withVariables(t, { BINDINGD_ENDPOINT: `127.0.0.1:${port}`, BINDINGD_TOKEN: undefined, BINDINGD_ENV: undefined });
  const env = await connect({ cwd: daemon.dir });
  try {
    await env.CACHE.put("tcp", "ok");
  } finally {
    env.close();
  }
});

test("a daemon of another env than asked for is refused", async (t) => {
  const daemon = await startDaemon(CONFIG, { args: ["--env", "dev"] });
  t.after(() => daemon.stop());
  withVariables(t, { BINDINGD_ENDPOINT: undefined, BINDINGD_TOKEN: undefined, BINDINGD_ENV: "staging" });
  await assert.rejects(connect({ cwd: daemon.dir }), (error) => {
    assert.ok(error instanceof WrongEnv && error instanceof DaemonUnavailable, String(error));
    assert.equal(error.reason, "WRONG_ENV");
    assert.match(error.message, /serves env "dev", not "staging" \(asked for by BINDINGD_ENV\)/);
    return true;
  });
  delete process.env.BINDINGD_ENV;
  await assert.rejects(connect({ cwd: daemon.dir, env: "staging" }), /asked for by connect\(\{ env \}\)/);
  const env = await connect({ cwd: daemon.dir, env: "dev" });
  assert.equal(env.envName, "dev");
  env.close();
});
