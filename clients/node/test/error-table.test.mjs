// The Node client against the daemon's own tables, read from the daemon's Python: the error table
// (bindingd/errors.py TABLE) and the shared wire values (bindingd_client.wire, which the daemon
// uses). A reason gained, lost, renamed or mapped to another class or code on either side fails here.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { BindingError, PermissionDenied, PolicyDenied, REASONS, errorFromRpc } from "../dist/errors.js";
import { RpcErrorInfo, RpcStatus } from "../dist/gen/bindingd/v1/rpc_status.js";
import * as wire from "../dist/wire.js";
import { BINDINGD } from "./support/daemon.mjs";

/** Reasons the client raises itself; the daemon never sends them. */
const CLIENT_ONLY = new Set(["DAEMON_UNAVAILABLE"]);

const WIRE_NAMES = [
  "HEADER_ACCEPTED",
  "AUTHORIZATION",
  "BEARER",
  "ERROR_DOMAIN",
  "STATUS_DETAILS_KEY",
  "ERROR_INFO_TYPE",
  "MAX_MESSAGE_BYTES",
  "CHUNK_BYTES",
];

// The daemon's interpreter is the one beside its command (the project's virtualenv under make).
const daemon = JSON.parse(
  execFileSync(
    join(dirname(BINDINGD), "python"),
    [
      "-c",
      `
import json, sys
from bindingd.errors import TABLE
from bindingd_client import wire
json.dump({
    "table": {reason.value: {"code": kind.code.name, "number": kind.code.value[0], "cls": kind.client_class}
              for reason, kind in TABLE.items()},
    "wire": {name: getattr(wire, name) for name in sys.argv[1:]},
}, sys.stdout)
`,
      ...WIRE_NAMES,
    ],
    { encoding: "utf8" },
  ),
);

test("the client knows exactly the daemon's reasons, and its own", () => {
  const daemonReasons = Object.keys(daemon.table).sort();
  const clientReasons = [...REASONS.keys()].filter((reason) => !CLIENT_ONLY.has(reason)).sort();
  assert.deepEqual(clientReasons, daemonReasons);
  for (const reason of CLIENT_ONLY) assert.ok(!(reason in daemon.table), `${reason} is the daemon's now`);
});

test("each reason maps to the daemon's class name", () => {
  for (const [reason, { cls }] of Object.entries(daemon.table)) {
    const clientClass = REASONS.get(reason);
    assert.equal(clientClass?.name, cls, reason);
    assert.equal(clientClass.defaultReason, reason);
    assert.ok(clientClass.prototype instanceof BindingError, cls);
  }
});

test("a status as the daemon sends it becomes that class, with the daemon's code", () => {
  for (const [reason, { code, number, cls }] of Object.entries(daemon.table)) {
    assert.equal(status[code], number, `gRPC code ${code}`);
    const info = RpcErrorInfo.encode({
      reason,
      domain: wire.ERROR_DOMAIN,
      metadata: { binding: "B", env: "dev", backend: "local", request_id: "r1" },
    }).finish();
    const trailer = RpcStatus.encode({
      code: number,
      message: "m",
      details: [{ typeUrl: wire.ERROR_INFO_TYPE, value: info }],
    }).finish();
    const metadata = new Metadata();
    metadata.set(wire.STATUS_DETAILS_KEY, Buffer.from(trailer));
    const error = errorFromRpc({ code: number, details: "m", metadata }, null);
    assert.equal(error.constructor.name, cls, reason);
    assert.deepEqual([error.reason, error.code, error.binding, error.requestId], [reason, code, "B", "r1"]);
  }
});

test("a policy denial is a PermissionDenied, as in the Python client", () => {
  assert.ok(new PolicyDenied("denied") instanceof PermissionDenied);
});

test("the wire values are the daemon's", () => {
  assert.deepEqual(Object.fromEntries(WIRE_NAMES.map((name) => [name, wire[name]])), daemon.wire);
});
