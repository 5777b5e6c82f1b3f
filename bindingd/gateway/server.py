"""`bindingd gateway serve`: the daemon's services over TLS, for callers holding an access token.

One bindingd `Runtime` per env of gateway.yaml serves that env's bindings with the daemon's own
providers, and the daemon's own service classes (KVService, SqlService, ...) serve the calls.
They are given a `Router` where the daemon gives its Runtime: it has the Runtime's interface,
dispatches each call to the env its token is for, and asks the policy before any binding is
used. So every call is checked where the services reach for a binding, and no service is
copied.

Per call:
1. `guarded` (around each method's handler) reads `authorization: Bearer <token>` before
   the request is decoded: a call without a valid token is refused with NOT_LOGGED_IN, SESSION_EXPIRED or
   TOKEN_REVOKED and never reaches a service. Health stays open (the gateway's own status).
2. The service asks the Router for the binding: the policy (as reloaded last) and the token's
   own `bindings` claim must both allow the method's action, else POLICY_DENIED.
3. When the call ends, one audit line: the decision, the status, the latency and the subject
   (a key, an object name, the SHA-256 of SQL), never a value, body, parameter or token.

SIGHUP reloads gateway.yaml's envs and policy (a bad file is logged and the old one kept);
SIGTERM/SIGINT drain like the daemon's serve.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import inspect
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from bindingd_client.proto import bindings_pb2, database_pb2, kv_pb2, objects_pb2, queue_pb2, vars_pb2
from bindingd_client.wire import AUTHORIZATION, BEARER
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bindingd import eventloop
from bindingd.config import ConfigError
from bindingd.config.model import Binding
from bindingd.errors import BindingdError, Reason, permission_denied
from bindingd.gateway import tokens
from bindingd.gateway.audit import AuditLog, sql_subject
from bindingd.gateway.config import GatewayConfig, load_gateway_config
from bindingd.gateway.policy import Decision, Policy
from bindingd.gateway.session_service import SessionService
from bindingd.gateway.session_service import add_to_server as add_session_to_server
from bindingd.gateway.sessions import Sessions
from bindingd.gateway.state import StateStore, open_state
from bindingd.gateway.tokens import Claims
from bindingd.runtime import InFlight, Runtime, Served
from bindingd.server import tracing
from bindingd.server.app import SERVER_OPTIONS, ServeError, serve_until_quiet, tcp_server_options
from bindingd.server.bindings import BindingsService
from bindingd.server.calls import REQUEST_ID_HEADER, RequestStream, abort, add_service, request_id_of
from bindingd.server.kv import KVService
from bindingd.server.objects import ObjectsService
from bindingd.server.queue import QueueService
from bindingd.server.sql import SqlService
from bindingd.server.vars import VarsService

log = structlog.get_logger("bindingd.gateway")

# How long an enrolled device's groups are remembered (they change only by re-enrolment).
GROUPS_TTL_S = 30.0

_KV = kv_pb2.DESCRIPTOR.services_by_name["KV"]
_OBJECTS = objects_pb2.DESCRIPTOR.services_by_name["Objects"]
_DATABASE = database_pb2.DESCRIPTOR.services_by_name["Database"]
_QUEUE = queue_pb2.DESCRIPTOR.services_by_name["Queue"]
_VARS = vars_pb2.DESCRIPTOR.services_by_name["Vars"]
_BINDINGS = bindings_pb2.DESCRIPTOR.services_by_name["Bindings"]
# Sent by a developer's daemon that may not write to the env (protected, no --allow-writes):
# its SQL is then served in a read-only transaction even for a caller granted `write`.
READ_ONLY_HEADER = "x-bindingd-read-only"

# The policy action of each method. SQL is decided per call (see Router._sql_action): a caller
# with `write` is served as the binding's access, one with only `read` read-only.
SQL = "sql"
_READ_WRITE = {
    _KV: {"Get": "read", "GetBulk": "read", "List": "read", "Put": "write", "Delete": "write"},
    _OBJECTS: {
        "Head": "read",
        "Get": "read",
        "List": "read",
        "Put": "write",
        "Delete": "write",
        "CreateMultipartUpload": "write",
        "UploadPart": "write",
        "CompleteMultipartUpload": "write",
        "AbortMultipartUpload": "write",
    },
    _DATABASE: {m.name: SQL for m in _DATABASE.methods},
    # Ack settles what Consume leased: the consumer's action.
    # Metrics is on the producer binding in Workers: the sender's action.
    _QUEUE: {"Send": "send", "SendBatch": "send", "Consume": "consume", "Ack": "consume", "Metrics": "send"},
    _VARS: {"Get": "read", "GetAll": "read"},
}
METHOD_ACTIONS: dict[str, str] = {
    f"/{service.full_name}/{name}": action
    for service, actions in _READ_WRITE.items()
    for name, action in actions.items()
}


# -- one call ------------------------------------------------------------------------------------


@dataclass
class GatewayCall:
    """What the gateway knows of the call being served: who (from the verified token), and
    what the Router decided, for the call's audit line."""

    method: str  # "/bindingd.v1.KV/Get"
    token: str = dataclasses.field(repr=False)  # checked again before each use in a long stream
    claims: Claims
    groups: tuple[str, ...]
    started: float  # time.perf_counter()
    binding: str = ""
    binding_type: str = ""
    action: str = ""
    decision: str = ""  # "allow" | "deny"; "" until a binding was asked for
    reason: str = ""
    subject: str | None = None
    read_only: bool = False  # sql served read-only: the caller holds `read`, not `write`
    # The caller asked for reads only (READ_ONLY_HEADER): a developer's daemon on a protected
    # env without --allow-writes. Honoured whatever the grants.
    asked_read_only: bool = False
    # The caller's address, read when the call starts: grpc's context.peer() reads the C call,
    # which may be gone by the time a cancelled stream's handler is finalized (a segfault, seen).
    peer: str = ""
    bytes_in: int = 0  # request messages as received
    bytes_out: int = 0  # response messages as sent
    request_id: str = ""  # the caller's x-request-id, else one made for the call
    # The handler was cancelled while the gateway drains: its grace period ran out. grpc's
    # context then shows no code and not cancelled() either, so the audit line would say OK.
    # (A client's own cancel outside a drain is left to context.cancelled(), as it was: a
    # consumer that leaves after its first batch is audited as the stream it was served.)
    cut: bool = False

    @property
    def user(self) -> str:
        return self.claims.sub

    @property
    def env(self) -> str:
        return self.claims.env


# Set by `guarded` for the task that serves the call (grpc runs each call in a task
# of its own), read by the Router and the subject recorders.
CURRENT: ContextVar[GatewayCall | None] = ContextVar("bindingd_gateway_call", default=None)


def current_call() -> GatewayCall:
    call = CURRENT.get()
    if call is None:  # a binding service reached without `guarded`: a wiring bug, refuse
        raise BindingdError(Reason.NOT_LOGGED_IN, "this call carries no verified access token")
    return call


# -- the Runtime the services see ----------------------------------------------------------------


class Router:
    """The `Runtime` interface the daemon's services use, over one Runtime per env: each call
    goes to the env of its token, and nothing is used that the policy and the token do not
    both allow."""

    # The services ask the daemon's Runtime for its own gateway session; a gateway serves every
    # binding itself.
    gateway = None
    tracing: Any = None

    def __init__(self, runtimes: dict[str, Runtime], policy: Policy, sessions: Sessions) -> None:
        self.runtimes = runtimes
        self.policy = policy
        self.sessions = sessions
        self.clock = time.time
        # What a drain waits on (counted by bindingd.server.calls for every call).
        self.calls_in_flight = 0
        self.last_call_at = time.monotonic()
        self.draining = False

    # -- what the services read -----------------------------------------------------------------

    @property
    def env(self) -> str:
        call = CURRENT.get()
        return call.env if call is not None else ""

    @property
    def writes_refused(self) -> bool:
        return False  # the policy decides each write; Bindings.List shows only what is granted

    def backend_of(self, name: str) -> str:
        call = CURRENT.get()
        runtime = self.runtimes.get(call.env) if call is not None else None
        return runtime.backend_of(name) if runtime is not None else ""

    def served(self) -> list[Served]:
        """The current env's bindings the caller may use at all (Bindings.List, Vars.GetAll):
        the others are not shown, not even their names."""
        call = current_call()
        if not call.decision:
            self._record(call, "*", "", "read", Decision(True, "only the bindings granted are served"))
        return [
            s for s in self._runtime(call).served() if self._any_allowed(call, s.binding.name, s.binding.type)
        ]

    def get(self, name: str) -> Served:
        """Describe: any granted action shows the binding."""
        call = current_call()
        runtime = self._runtime(call)
        binding = self._binding(call, runtime, name)
        if not self._any_allowed(call, name, binding.type):
            decision = Decision(
                False, f'user "{call.user}" has no grant on binding "{name}" in env "{call.env}"'
            )
            self._record(call, name, binding.type, "read", decision)
            raise self._denied(call, name, decision)
        return runtime.get(name)

    def lookup(self, name: str, *binding_types: str) -> Served:
        runtime = self._authorize(name, binding_types)
        return runtime.lookup(name, *binding_types)

    def use(self, name: str, binding_type: str, *, write: bool = False) -> InFlight[Any]:
        served = self._authorize(name, (binding_type,)).lookup(name, binding_type)
        if write:
            self.check_writable(served.binding)
        assert served.provider is not None  # lookup() raised for a provider that failed to start
        return InFlight(served, served.provider, self.tracing)

    def check_writable(self, binding: Binding) -> None:
        """SqlService runs a call read-only when this raises (its statement's writes are then
        refused by the backend itself)."""
        call = current_call()
        if call.read_only and call.asked_read_only:
            # The caller's daemon asked for reads only, whatever its grants: say why, as the
            # daemon does for a local protected env.
            raise permission_denied(
                f'env "{call.env}" is protected: writes need --allow-writes on the daemon '
                f"(bindingd serve --allow-writes, or bindingd run --allow-writes) (binding "
                f'"{binding.name}"): statements run in a read-only transaction'
            )
        if call.read_only:
            raise permission_denied(
                f'user "{call.user}" may only read sql binding "{binding.name}" in env "{call.env}" '
                "(the policy grants read, not write): statements run in a read-only transaction"
            )
        self._runtime(call).check_writable(binding)

    # -- the decision ---------------------------------------------------------------------------

    def _runtime(self, call: GatewayCall) -> Runtime:
        runtime = self.runtimes.get(call.env)
        if runtime is None:  # removed by a reload after the token was checked
            raise tokens.not_logged_in(
                self.sessions.gateway_id, call.env, "this gateway no longer serves the env"
            )
        return runtime

    def _binding(self, call: GatewayCall, runtime: Runtime, name: str) -> Binding:
        binding = runtime.config.bindings.get(name)
        if binding is None:
            # The daemon's message lists every binding defined; here only the granted ones.
            granted = ", ".join(
                sorted(n for n, b in runtime.config.bindings.items() if self._any_allowed(call, n, b.type))
            )
            self._record(call, name, "", "", Decision(False, "no such binding"))
            raise BindingdError(
                Reason.BINDING_NOT_FOUND,
                f'binding "{name}" is not served in env "{call.env}" (granted to user "{call.user}": '
                f"{granted or 'none'})",
                binding=name,
                env=call.env,
            )
        return binding

    def _authorize(self, name: str, binding_types: Sequence[str]) -> Runtime:
        call = current_call()
        if call.decision:
            # A stream asks again for each batch: a revocation since its start cuts it.
            self.sessions.verify(call.token, call.env)
        runtime = self._runtime(call)
        binding = self._binding(call, runtime, name)
        if binding.type not in binding_types:
            return runtime  # the runtime answers WRONG_BINDING_TYPE; nothing was used
        action = METHOD_ACTIONS.get(call.method, "")
        if action == SQL:
            action, decision = self._sql_action(call, binding)
        elif action:
            decision = self._decide(call, name, binding.type, action)
        else:
            decision = Decision(False, f"{call.method} is not a method the gateway serves")
        self._record(call, name, binding.type, action, decision)
        if not decision.allow:
            raise self._denied(call, name, decision)
        return runtime

    def _sql_action(self, call: GatewayCall, binding: Binding) -> tuple[str, Decision]:
        write = self._decide(call, binding.name, binding.type, "write")
        if write.allow and not call.asked_read_only:
            call.read_only = False
            return "write", write
        read = self._decide(call, binding.name, binding.type, "read")
        call.read_only = read.allow
        return "read", read

    def _decide(self, call: GatewayCall, binding: str, binding_type: str, action: str) -> Decision:
        decision = self.policy.decide(call.user, call.groups, call.env, binding, binding_type, action)
        if decision.allow and action not in call.claims.bindings.get(binding, ()):
            # The policy allows it now, but the token was minted before: it never exceeds its claim.
            return Decision(
                False,
                f'user "{call.user}" may {action} on {binding_type} binding "{binding}" in env '
                f'"{call.env}" by the policy, but this session\'s token does not carry it (opened '
                "before the grant): the next session will",
            )
        return decision

    def _any_allowed(self, call: GatewayCall, binding: str, binding_type: str) -> bool:
        claimed = call.claims.bindings.get(binding, ())
        return any(
            self.policy.decide(call.user, call.groups, call.env, binding, binding_type, action).allow
            for action in claimed
        )

    def _record(self, call: GatewayCall, binding: str, binding_type: str, action: str, d: Decision) -> None:
        """The call's audit fields: its first decision, or a later deny (a stream cut by a
        policy reload) that ended it."""
        if call.decision and (d.allow or call.decision == "deny"):
            return
        call.binding, call.binding_type, call.action = binding, binding_type, action
        call.decision, call.reason = ("allow" if d.allow else "deny"), d.reason

    def _denied(self, call: GatewayCall, binding: str, decision: Decision) -> BindingdError:
        return BindingdError(Reason.POLICY_DENIED, decision.reason, binding=binding, env=call.env)


# -- subjects: what a call is about, for its audit line -------------------------------------------


def _batch_subject(request: Any) -> str:
    return " ".join(sql_subject(s.sql) for s in request.statements)


_KEY: Callable[[Any], str] = lambda r: r.key  # noqa: E731
_PREFIX: Callable[[Any], str] = lambda r: r.prefix  # noqa: E731
SUBJECTS: dict[str, dict[str, Callable[[Any], str]]] = {
    "KV": {"Get": _KEY, "Put": _KEY, "Delete": _KEY, "List": _PREFIX, "GetBulk": lambda r: " ".join(r.keys)},
    "Objects": {
        "Head": _KEY,
        "Get": _KEY,
        "Delete": lambda r: " ".join(r.keys),
        "List": _PREFIX,
        "CreateMultipartUpload": _KEY,
        "CompleteMultipartUpload": _KEY,
        "AbortMultipartUpload": _KEY,
        # Client streams: the header, the first message (see _observe_stream).
        "Put": lambda r: r.header.key,
        "UploadPart": lambda r: r.header.key,
    },
    "Database": {
        "Query": lambda r: sql_subject(r.statement.sql),
        "Batch": _batch_subject,
        "Exec": lambda r: sql_subject(r.sql),
    },
}


class Subjects:
    """A servicer seen through its subjects: each method records what its request is about
    on the call, then runs the servicer's own (add_service registers these in its place)."""

    def __init__(self, servicer: object, subjects: dict[str, Callable[[Any], str]]) -> None:
        self._servicer = servicer
        self._subjects = subjects

    def __getattr__(self, name: str) -> Any:
        impl = getattr(self._servicer, name)
        subject = self._subjects.get(name)
        if subject is None:
            return impl
        if inspect.isasyncgenfunction(impl):

            async def streamed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                _note(subject, request)
                async for response in impl(request, context):
                    yield response

            return streamed

        async def answered(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, RequestStream):
                _observe_stream(request, subject)
            else:
                _note(subject, request)
            return await impl(request, context)

        return answered


def _note(subject: Callable[[Any], str], request: Any) -> None:
    call = CURRENT.get()
    if call is not None and call.subject is None:
        try:
            call.subject = subject(request)
        except (AttributeError, TypeError):  # a request without the field: no subject
            call.subject = ""


def _observe_stream(requests: RequestStream, subject: Callable[[Any], str]) -> None:
    """Note the subject of a client stream's first message (its header) as it is decoded."""
    decode = requests.decode

    async def decode_first(raw: bytes) -> Any:
        request = await decode(raw)
        _note(subject, request)
        requests.decode = decode  # type: ignore[method-assign]  # the rest decode as usual
        return request

    requests.decode = decode_first  # type: ignore[method-assign]


# -- the token check -----------------------------------------------------------------------------


def call_headers(metadata: Iterable[tuple[str, str | bytes]] | None) -> tuple[str, bool, str]:
    """The access token (`authorization: Bearer ...`, "" when there is none), whether the
    caller asked for reads only (READ_ONLY_HEADER) and its request id ("" when it sent none
    usable), read in one pass over the call's metadata."""
    token: str | None = None  # the first authorization header decides
    read_only, request_id = False, ""
    for key, value in metadata or ():
        if key == AUTHORIZATION:
            if token is None:
                token = ""
                if isinstance(value, str) and value.startswith(BEARER):
                    token = value[len(BEARER) :].strip()
        elif key == REQUEST_ID_HEADER:
            if not request_id and isinstance(value, str) and 0 < len(value) <= 64:
                request_id = value
        elif key == READ_ONLY_HEADER and value == "1":
            read_only = True
    return token or "", read_only, request_id


# token -> the env it names: a session's token comes with each of its calls, and reading its
# claims again (base64, then JSON) was a measurable part of a small call's cost at the gateway.
# Only what a token *says*: it is verified on every call all the same. Cleared when full.
_TOKEN_ENVS: dict[str, str] = {}
_TOKEN_ENVS_MAX = 4096


def token_env(token: str) -> str:
    """The env a token names, read before it is verified: verification then checks the
    signature over it (`Sessions.verify(token, env)`). "" when it cannot be read."""
    env = _TOKEN_ENVS.get(token)
    if env is None:
        if len(_TOKEN_ENVS) >= _TOKEN_ENVS_MAX:
            _TOKEN_ENVS.clear()
        env = _TOKEN_ENVS[token] = _read_token_env(token)
    return env


def _read_token_env(token: str) -> str:
    try:
        body = token.split(".")[2]
        signed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        env = json.loads(signed[:-64]).get("env")  # v4.public: the message, then a 64-byte signature
    except (IndexError, ValueError, UnicodeError, AttributeError):
        return ""
    return env if isinstance(env, str) else ""


def guarded(gateway: Gateway, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` of a binding service behind the token check, made once per method.

    Each call: `authorization: Bearer <token>` is verified before its request is decoded (a
    stream's not read at all): a call without a valid token is refused with NOT_LOGGED_IN,
    SESSION_EXPIRED or TOKEN_REVOKED and never reaches a service. Then the handler runs with
    the call's GatewayCall current, and the audit line is written once it is over.

    Done here rather than by a grpc ServerInterceptor: an interceptor runs for every call as a
    coroutine of its own and makes a handler per call, measured at 30-50 us of CPU a call.

    The call's bytes in and out are counted for its audit line: requests come as the bytes
    they were sent as (calls.add_service decodes them itself), and responses are serialized
    here, before the audit line is written, rather than by grpc after it."""
    deserialize = handler.request_deserializer
    serialize = handler.response_serializer or _same
    serdes = {"request_deserializer": deserialize, "response_serializer": _same}
    still_open = gateway.sessions.check_open

    async def begin(context: grpc.aio.ServicerContext) -> GatewayCall:
        started = time.perf_counter()
        token, asked_read_only, request_id = call_headers(context.invocation_metadata())
        request_id = request_id or request_id_of(context)  # one made for the call, the same for all
        try:
            claims = gateway.verify(token)
            groups = await gateway.groups_of(claims)
        except BindingdError as err:
            gateway.audit_refusal(err, method, context, request_id, started)
            await abort(context, err, request_id)
            raise AssertionError("unreachable: abort raises") from None
        call = GatewayCall(
            method, token, claims, groups, started, asked_read_only=asked_read_only, request_id=request_id
        )
        call.peer = context.peer()
        CURRENT.set(call)
        return call

    def take(call: GatewayCall, request: Any) -> Any:
        if isinstance(request, bytes | bytearray | memoryview):
            call.bytes_in += len(request)
            return request
        if hasattr(request, "__aiter__"):
            return _counting(request, call)
        return request

    def give(call: GatewayCall, response: Any) -> Any:
        data = serialize(response)
        call.bytes_out += len(data)
        return data

    if handler.response_streaming:
        inner_stream = handler.stream_stream if handler.request_streaming else handler.unary_stream

        async def streamed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = await begin(context)
            try:
                async for response in inner_stream(take(call, request), context):
                    # A download or a large result outliving its token's revocation is cut here,
                    # before its next message (a consume stream also checks its own asks).
                    try:
                        still_open(call.claims)
                    except BindingdError as e:
                        call.decision, call.reason = "deny", e.reason.value
                        await abort(context, e, call.request_id)
                    yield give(call, response)
            except asyncio.CancelledError:
                call.cut = gateway.router.draining
                raise
            finally:
                gateway.audit_call(call, context)

        make = (
            grpc.stream_stream_rpc_method_handler
            if handler.request_streaming
            else grpc.unary_stream_rpc_method_handler
        )
        return make(streamed, **serdes)
    inner = handler.stream_unary if handler.request_streaming else handler.unary_unary

    async def answered(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = await begin(context)
        try:
            return give(call, await inner(take(call, request), context))
        except asyncio.CancelledError:
            call.cut = gateway.router.draining
            raise
        finally:
            gateway.audit_call(call, context)

    make = (
        grpc.stream_unary_rpc_method_handler
        if handler.request_streaming
        else grpc.unary_unary_rpc_method_handler
    )
    return make(answered, **serdes)


def _same(data: Any) -> Any:
    return data


async def _counting(requests: AsyncIterator[Any], call: GatewayCall) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, bytes | bytearray | memoryview):
            call.bytes_in += len(request)
        yield request


def _status(call: GatewayCall, context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if code is None:
        # A call cancelled (by its client, or at the end of a drain's grace period) ends
        # without a code of ours.
        return "CANCELLED" if call.cut or context.cancelled() else "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


def _call_event(call: GatewayCall, status: str, latency_ms: float) -> dict[str, Any]:
    """The audit line of a call that was let in (its token verified)."""
    return {
        "event": "call",
        "decision": call.decision or "allow",  # "" : the token was accepted, no binding asked
        "user": call.user,
        "jti": call.claims.jti,
        "device": call.claims.jkt,
        "peer": call.peer,
        "env": call.env,
        "binding": call.binding,
        "binding_type": call.binding_type,
        "method": call.method,
        "action": call.action,
        "subject": call.subject,
        "reason": call.reason,
        "status": status,
        "request_id": call.request_id,
        "latency_ms": latency_ms,
        "bytes_in": call.bytes_in,
        "bytes_out": call.bytes_out,
    }


# -- the gateway ---------------------------------------------------------------------------------


class Gateway:
    def __init__(
        self, config: GatewayConfig, *, grace_s: float = 10.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.grace_s = grace_s
        # The providers' clock (KV expiry, queue delays): tests move it forward. Tokens always
        # use the wall clock.
        self.clock = clock
        # The TCP port listened on, once started.
        self.port = 0
        self.store: StateStore = _store(config)
        self.sessions = Sessions(
            self.store,
            gateway_id=config.id,
            signing_key=tokens.load_signing_key(config.signing_key),
            old_keys=[tokens.load_signing_key(path).public() for path in config.previous_signing_keys],
        )
        self.audit = AuditLog(path=config.audit.path) if config.audit.path else AuditLog.stdout()
        self.router = Router({}, config.policy, self.sessions)
        self.router.clock = clock
        # OpenTelemetry, when OTEL_EXPORTER_OTLP_ENDPOINT is set: a span per call, continuing the
        # developer's daemon's trace (its traceparent).
        self.router.tracing = tracing.from_environment("bindingd-gateway")
        self.health = health.aio.HealthServicer()
        self.session_service: SessionService | None = None
        self._groups: dict[str, tuple[tuple[str, ...], float]] = {}
        self._server: grpc.aio.Server | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()

    # -- per call -------------------------------------------------------------------------------

    def verify(self, token: str) -> Claims:
        gateway_id = self.config.id
        if not token:
            raise BindingdError(
                Reason.NOT_LOGGED_IN,
                f'not logged in to gateway "{gateway_id}": the call carries no access token; '
                "run `bindingd login --env ENV`",
            )
        env = token_env(token)
        if env not in self.router.runtimes:
            why = f'it is for env "{env}", which this gateway does not serve' if env else "it does not verify"
            raise tokens.not_logged_in(
                gateway_id, env or "?", f"the access token is not one for this gateway: {why}"
            )
        return self.sessions.verify(token, env)

    async def groups_of(self, claims: Claims) -> tuple[str, ...]:
        """The groups the device was enrolled with (`gateway grant --group`), remembered a while."""
        now = time.monotonic()
        seen = self._groups.get(claims.jkt)
        if seen is not None and now - seen[1] < GROUPS_TTL_S:
            return seen[0]
        device = await self.store.device(claims.jkt)
        if device is None:
            raise tokens.not_logged_in(
                self.config.id, claims.env, "this device is not enrolled at the gateway"
            )
        self._groups[claims.jkt] = (device.groups, now)
        return device.groups

    def audit_call(self, call: GatewayCall, context: grpc.aio.ServicerContext) -> None:
        # Its status and latency now; its line, and the rest of its fields, once the answer is
        # on its way (AuditLog.write_soon).
        latency_ms = round((time.perf_counter() - call.started) * 1000, 3)
        self.audit.write_soon(functools.partial(_call_event, call, _status(call, context), latency_ms))

    def audit_refusal(
        self,
        err: BindingdError,
        method: str,
        context: grpc.aio.ServicerContext,
        request_id: str,
        started: float,
    ) -> None:
        # Soon, like the lines of the calls let in, so that the log keeps the order of decisions.
        self.audit.write_soon(
            {
                "event": "call",
                "decision": "deny",
                "user": "",
                "peer": context.peer(),
                "env": err.env,
                "method": method,
                "reason": err.reason.value,
                "status": err.code.name,
                "request_id": request_id,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def _new_runtime(self, env: str) -> Runtime:
        # Writes are the policy's to refuse (a grant naming a protected env), not --allow-writes.
        return Runtime(self.config.runtime_config(env), allow_writes=True, clock=self.clock)

    def _build_server(self) -> grpc.aio.Server:
        server = grpc.aio.server(options=[*SERVER_OPTIONS, *tcp_server_options()])
        router = self.router
        services: list[tuple[object, Any]] = [
            (KVService(router), _KV),  # type: ignore[arg-type]  # the Router has the Runtime's interface
            (VarsService(router), _VARS),  # type: ignore[arg-type]
            (ObjectsService(router), _OBJECTS),  # type: ignore[arg-type]
            (SqlService(router), _DATABASE),  # type: ignore[arg-type]
            (QueueService(router), _QUEUE),  # type: ignore[arg-type]
            (BindingsService(router), _BINDINGS),  # type: ignore[arg-type]
        ]
        for servicer, descriptor in services:
            subjects = SUBJECTS.get(descriptor.name)
            add_service(
                server,
                Subjects(servicer, subjects) if subjects else servicer,
                descriptor,
                wrap=lambda method, handler: guarded(self, method, handler),
            )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self.session_service = _add_session_service(server, self)
        return server

    async def start(self) -> None:
        config = self.config
        try:
            credentials = grpc.ssl_server_credentials(
                [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
            )
        except OSError as e:
            raise ServeError(f"cannot read the gateway's TLS certificate or key: {e}") from e
        await self.store.open()
        await self.sessions.revocations.refresh()
        self._spawn(self.sessions.revocations.follow())
        for env in config.envs:
            runtime = self._new_runtime(env)
            await runtime.start()
            self.router.runtimes[env] = runtime
        server = self._server = self._build_server()
        try:
            bound = server.add_secure_port(config.listen, credentials)
        except RuntimeError as e:
            raise ServeError(f"cannot listen on {config.listen}: {e}") from e
        if bound == 0:
            raise ServeError(f"cannot listen on {config.listen}: the address is in use or not available")
        self.port = bound
        await server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "gateway serving",
            id=config.id,
            listen=config.listen,
            envs=list(config.envs),
            config=str(config.path),
            loop=eventloop.loop_name(),
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            await self.start()
        except BaseException:
            await self._close()
            raise
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        await self._stop.wait()
        await self.shutdown()
        return 0

    def _on_sighup(self) -> None:
        if not self._stop.is_set():
            self._spawn(self.reload())

    async def reload(self) -> bool:
        """gateway.yaml's envs, bindings and policy anew; the rest (listen, TLS, keys, state,
        audit) is read at start only. A bad file changes nothing."""
        try:
            config = await asyncio.to_thread(load_gateway_config, self.config.path)
            fixed = ("id", "listen", "tls_cert", "tls_key", "signing_key", "state", "audit")
            ignored = [key for key in fixed if getattr(config, key) != getattr(self.config, key)]
            config = dataclasses.replace(self.config, envs=config.envs, policy=config.policy)
            self.config = config
            if self.session_service is not None:
                self.session_service.config = config
            runtimes = self.router.runtimes
            for env in config.envs:
                if env in runtimes:
                    await runtimes[env].reload(config.runtime_config(env))
                else:
                    runtime = self._new_runtime(env)
                    await runtime.start()
                    runtimes[env] = runtime
            removed = [env for env in runtimes if env not in config.envs]
            for env in removed:
                await runtimes.pop(env).close()
            self.router.policy = config.policy
        except ConfigError as e:
            log.error("reload failed; still serving the previous config", error=str(e))
            return False
        except Exception:
            log.exception("reload failed; still serving the previous config")
            return False
        if ignored:
            log.warning("reloaded without these settings: they take a restart", settings=ignored)
        log.info("reloaded", envs=list(config.envs), removed=removed)
        return True

    async def shutdown(self) -> None:
        """Drain as the daemon does: answer what is on its way, then stop within the grace period."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_s
        log.info("draining", grace_s=self.grace_s)
        router = self.router
        router.draining = True
        for runtime in router.runtimes.values():
            runtime.draining = True
        await self.health.enter_graceful_shutdown()
        await serve_until_quiet(router, self.grace_s)
        if self._server is not None:
            await self._server.stop(max(0.0, deadline - loop.time()))
        await self._close()
        log.info("stopped")

    async def _close(self) -> None:
        for task in list(self._background):
            task.cancel()
        runtimes, self.router.runtimes = self.router.runtimes, {}
        await asyncio.gather(*(r.close() for r in runtimes.values()), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.store.close()
        self.audit.close()
        if self.router.tracing is not None:
            await asyncio.to_thread(self.router.tracing.close)
            self.router.tracing = None


def _store(config: GatewayConfig) -> StateStore:
    state = config.state
    try:
        return open_state(state.kind, path=state.path, dsn=state.dsn)
    except ValueError as e:
        raise ConfigError(str(e), file=config.path) from None


def _add_session_service(server: grpc.aio.Server, gateway: Gateway) -> SessionService:
    """The Session service (Enrol, Challenge, Open, Logout): the token check (`guarded`) is not around it, it
    checks its own callers. Returned so that a reload can hand it the new config."""
    servicer = SessionService(gateway.sessions, gateway.config)
    add_session_to_server(server, servicer)
    return servicer
