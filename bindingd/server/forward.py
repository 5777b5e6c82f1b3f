"""Calls to bindings served through a gateway, relayed to it as they came.

The gateway serves the daemon's own gRPC API, so a call to a remote binding goes on unchanged:
the same method, the request's bytes as received, the access token added, and the answer's
bytes relayed back, message by message (an object body, a large SQL result or a queue's
batches pass through as streams; neither hop holds a whole one). The gateway's errors come back
as it sent them (its reason, binding and env); one that never reached it is said in bindingd's
words (unreachable, wrong certificate, not logged in), naming the gateway.

What the daemon still decides itself: the developer's `--allow-writes` on a protected env (the
gateway's policy decides the rest). A call the gateway refused as SESSION_EXPIRED is sent again
once with a new token, unless part of its request stream was already sent (a client stream is
not kept to be replayed: the token is checked and renewed before such a call starts instead).
A read (KV, objects, vars) whose connection to the gateway failed (UNAVAILABLE without a bindingd
error: an instance stopped behind a load balancer), or that a stopping gateway cancelled before
answering it (CANCELLED without one), is sent again once. Nothing else is retried: a write, a
send or SQL that failed after leaving may have been applied, and its error says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from bindingd_client.wire import HEADER_ACCEPTED, STATUS_DETAILS_KEY

from bindingd.errors import BindingdError, Reason, permission_denied
from bindingd.providers.gateway.session import GatewaySession, gateway_failure
from bindingd.server.calls import abort, request_id_of

# Uploads whose header the gateway answers before the body flows (see ObjectsService._accept).
ACKED_UPLOADS = frozenset({"/bindingd.v1.Objects/Put", "/bindingd.v1.Objects/UploadPart"})

# Actions whose calls may be sent again after a failed connection or a cancel with no answer
# (see Forwarder._may_resend), after a pause that lets the channel pick another address or
# instance.
RESENDABLE = frozenset({"read"})
RESEND_ON = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
RESEND_AFTER_S = 0.1
# Failures with no answer from the gateway after which a call may or may not have run there.
CUT_ON = RESEND_ON | {grpc.StatusCode.DEADLINE_EXCEEDED}
# What grpc says of a call that never left: no connection was made (lower case).
NEVER_LEFT = ("failed to connect", "dns resolution failed", "no reachable endpoints")

# Actions that change something: refused on a protected env without --allow-writes. Consuming
# is one (an ack removes messages), as in the daemon's own QueueService.
WRITE_ACTIONS = frozenset({"write", "send", "consume"})
# Actions whose call may have changed something when it failed unanswered (SQL cannot be told
# read or write here).
MAY_CHANGE = WRITE_ACTIONS | {"sql"}


def _never_left(e: grpc.aio.AioRpcError) -> bool:
    details = (e.details() or "").lower()
    return any(words in details for words in NEVER_LEFT)


def _identity(data: bytes) -> bytes:
    return data


class Forwarder:
    """Relays one env's calls to remote bindings. `runtime` is the daemon's Runtime."""

    def __init__(self, runtime: Any) -> None:
        # The gateway's own table of each method's policy action (imported here: the gateway's
        # server module serves this package's services).
        from bindingd.gateway.server import METHOD_ACTIONS, READ_ONLY_HEADER

        self.runtime = runtime
        self.actions: dict[str, str] = METHOD_ACTIONS
        self.read_only_header = READ_ONLY_HEADER
        self._callables: dict[tuple[str, str], tuple[Any, Any]] = {}

    def _callable(self, session: GatewaySession, kind: str, path: str) -> Any:
        """The channel's callable for `path` (raw bytes both ways), made once per channel: grpc
        builds a new one per call otherwise, a measurable part of a small call's cost."""
        channel = session.channel
        made = self._callables.get((kind, path))
        if made is None or made[0] is not channel:
            multi = getattr(channel, kind)(
                path, request_serializer=_identity, response_deserializer=_identity
            )
            made = self._callables[(kind, path)] = (channel, multi)
        return made[1]

    def session_for(self, binding: str) -> GatewaySession | None:
        """The gateway session serving `binding`, or None for a binding served here."""
        session: GatewaySession | None = self.runtime.gateway
        if session is None or self.runtime.is_local(binding):
            return None
        return session

    def _may_resend(self, path: str, e: grpc.aio.AioRpcError) -> bool:
        """Whether a call that failed this way is sent again, once: a read (nothing it does can
        be done twice) that failed with no bindingd error, UNAVAILABLE (the connection to the
        gateway failed: an instance behind a load balancer stopped, a reset) or CANCELLED by the
        far side (a stopping gateway ends so the calls that reached it but not yet a handler; a
        load balancer relays that). A worker's own cancel never gets here: it cancels this
        handler. A write, a queue send or SQL is never resent: it may have been applied."""
        if self.actions.get(path) not in RESENDABLE or e.code() not in RESEND_ON:
            return False
        return not any(key == STATUS_DETAILS_KEY for key, _ in e.trailing_metadata() or ())

    def _writes_refused(self, session: GatewaySession) -> bool:
        protected = self.runtime.config.protected or session.protected
        return bool(protected and not self.runtime.allow_writes)

    def _metadata(
        self, session: GatewaySession, token: str, path: str, context: Any
    ) -> tuple[tuple[str, str], ...]:
        metadata = session.metadata(token, request_id_of(context))
        if self.runtime.tracing is not None:
            metadata += self.runtime.tracing.inject()  # the trace goes on at the gateway
        if self.actions.get(path) == "sql" and self._writes_refused(session):
            # SQL cannot be told read or write here: the gateway runs it read-only.
            metadata += ((self.read_only_header, "1"),)
        return metadata

    def _check(self, session: GatewaySession, path: str, binding: str) -> None:
        action = self.actions.get(path, "")
        if action in WRITE_ACTIONS and self._writes_refused(session):
            raise permission_denied(
                f'env "{session.env}" is protected: writes need --allow-writes on the daemon '
                f'(bindingd serve --allow-writes) (binding "{binding}", through gateway {session.url})'
            )

    async def _fail(
        self, e: BaseException, session: GatewaySession, path: str, binding: str, context: Any
    ) -> None:
        """End the call with `e`: the gateway's own status as it sent it, else bindingd's."""
        request_id = request_id_of(context)
        if isinstance(e, grpc.aio.AioRpcError):
            trailers = e.trailing_metadata() or ()
            if any(key == STATUS_DETAILS_KEY for key, _ in trailers):
                kept = tuple((k, v) for k, v in trailers if k == STATUS_DETAILS_KEY)
                await context.abort(e.code(), e.details() or "", trailing_metadata=kept)
            cut = e.code() in CUT_ON and not _never_left(e)
            e = await gateway_failure(session.target, e)
            if cut and self.actions.get(path) in MAY_CHANGE:
                # Cut, cancelled unanswered or timed out, with nothing from the gateway: whether
                # it ran there cannot be known here, and it is not sent again.
                e = BindingdError(
                    e.reason,
                    f"{e.message}. This call may change something, so it was not sent again: it "
                    "may or may not have been applied",
                    env=e.env,
                )
        if not isinstance(e, BindingdError):
            raise e
        await abort(context, e.with_context(binding=binding, env=session.env, backend="gateway"), request_id)

    # -- the four shapes of call ---------------------------------------------------------------

    async def unary(
        self, session: GatewaySession, path: str, binding: str, raw: bytes, context: Any
    ) -> bytes:
        call = self._callable(session, "unary_unary", path)
        try:
            self._check(session, path, binding)
            token = await session.token()
            try:
                return await call(raw, metadata=self._metadata(session, token, path, context))  # type: ignore[no-any-return]
            except grpc.aio.AioRpcError as e:
                if self._may_resend(path, e):
                    await asyncio.sleep(RESEND_AFTER_S)
                elif not _expired(e):
                    raise
                else:
                    await session.renew(token)
            return await call(raw, metadata=self._metadata(session, await session.token(), path, context))  # type: ignore[no-any-return]
        except (BindingdError, grpc.aio.AioRpcError) as e:
            await self._fail(e, session, path, binding, context)
            raise AssertionError("unreachable: abort raises") from None

    async def unary_stream(
        self, session: GatewaySession, path: str, binding: str, raw: bytes, context: Any
    ) -> AsyncIterator[bytes]:
        multi = self._callable(session, "unary_stream", path)
        try:
            self._check(session, path, binding)
            token = await session.token()
            for attempt in (1, 2):
                sent = False
                try:
                    async for response in multi(raw, metadata=self._metadata(session, token, path, context)):
                        sent = True
                        yield response
                    return
                except grpc.aio.AioRpcError as e:
                    if sent or attempt == 2:
                        raise
                    if self._may_resend(path, e):
                        await asyncio.sleep(RESEND_AFTER_S)
                    elif not _expired(e):
                        raise
                    else:
                        await session.renew(token)
                token = await session.token()
        except (BindingdError, grpc.aio.AioRpcError) as e:
            await self._fail(e, session, path, binding, context)

    async def stream_unary(
        self,
        session: GatewaySession,
        path: str,
        binding: str,
        requests: AsyncIterator[bytes],
        context: Any,
    ) -> bytes:
        call = self._callable(session, "stream_unary", path)
        try:
            self._check(session, path, binding)
            token = await session.token()
            metadata = self._metadata(session, token, path, context)
            async with _sending(call(metadata=metadata), requests, path in ACKED_UPLOADS) as pending:
                # The gateway's "header accepted" (see ObjectsService) is what lets the client
                # send the body: relayed as soon as it comes.
                await _relay_initial_metadata(pending, context)
                return await pending  # type: ignore[no-any-return]
        except (BindingdError, grpc.aio.AioRpcError) as e:
            await self._fail(e, session, path, binding, context)
            raise AssertionError("unreachable: abort raises") from None

    async def stream_stream(
        self,
        session: GatewaySession,
        path: str,
        binding: str,
        requests: AsyncIterator[bytes],
        context: Any,
    ) -> AsyncIterator[bytes]:
        multi = self._callable(session, "stream_stream", path)
        try:
            self._check(session, path, binding)
            token = await session.token()
            async with _sending(
                multi(metadata=self._metadata(session, token, path, context)), requests
            ) as pending:
                await _relay_initial_metadata(pending, context)
                async for response in pending:
                    yield response
        except (BindingdError, grpc.aio.AioRpcError) as e:
            await self._fail(e, session, path, binding, context)


@contextlib.asynccontextmanager
async def _sending(call: Any, requests: AsyncIterator[bytes], acked: bool = False) -> AsyncIterator[Any]:
    """`call` (a client- or bidi-streaming call made without a request iterator) with the
    worker's requests written to it as they come.

    Written here, not by grpc from an iterator: when the gateway ends the call while requests
    are still coming (a refused object put, after its header), grpc's own request consumer fails
    with INTERNAL ("Internal error from Core") and the gateway's status is lost; a write to an
    ended call just stops the pump here, and the call's status says why. A call still open when
    the relay ends (the worker cancelled, or the daemon stops) is cancelled at the gateway too.

    `acked`: an upload whose header the gateway accepts (HEADER_ACCEPTED) or refuses before the
    body: the body waits for that answer. grpc marks a write that races the gateway's refusal
    as INTERNAL, overwriting the refusal it carried."""

    async def pump() -> None:
        try:
            first = True
            async for request in requests:
                await call.write(request)
                if first and acked:
                    first = False
                    answer = await call.initial_metadata()
                    if not any(key == HEADER_ACCEPTED for key, _ in answer or ()):
                        return  # refused: its status is on the way
            await call.done_writing()
        except (asyncio.InvalidStateError, grpc.aio.AioRpcError, grpc.aio.UsageError):
            return  # the call has ended: its status is the answer
        except Exception:
            call.cancel()  # the worker's stream broke: the gateway must not wait for the rest
            raise

    writer = asyncio.get_running_loop().create_task(pump())
    try:
        yield call
    finally:
        if not call.done():
            call.cancel()
        if not writer.done():
            writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer


async def _relay_initial_metadata(call: Any, context: Any) -> None:
    initial = await call.initial_metadata()
    relayed = tuple((k, v) for k, v in initial or () if not k.startswith("grpc-"))
    if relayed:
        await context.send_initial_metadata(relayed)


def _expired(e: grpc.aio.AioRpcError) -> bool:
    if e.code() != grpc.StatusCode.UNAUTHENTICATED:
        return False
    from bindingd_client.errors import error_from_rpc

    return error_from_rpc(e).reason == Reason.SESSION_EXPIRED.value
