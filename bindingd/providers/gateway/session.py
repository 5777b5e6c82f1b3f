"""The daemon's session with an env's gateway: one TLS channel, one access token, discovery.

The daemon serving an env that names a gateway keeps one `GatewaySession`. It opens the session
in the background (local bindings never wait for it): the device key signs a challenge, the
gateway answers with an access token and the bindings this user may use in the env (name, type,
actions), which the daemon then serves. The token is renewed at 80 % of its lifetime while calls
go on with the old one; before each call its expiry is checked against the wall clock (a laptop
that slept), and a call the gateway refused as SESSION_EXPIRED is retried once with a new token
(bindingd.server.forward).

The token lives in this object only: never in a log line, an error, `bindings` output or a
worker's environment.

States, as `bindings` shows them: connecting, ready, not logged in, expired, denied, unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import grpc
import structlog
from bindingd_client.proto import session_pb2, session_pb2_grpc
from bindingd_client.wire import AUTHORIZATION, BEARER, MAX_MESSAGE_BYTES

from bindingd.config import Config
from bindingd.errors import BindingdError, Reason, backend_unavailable
from bindingd.gateway import device
from bindingd.gateway.tokens import rfc3339
from bindingd.providers.gateway.target import CALL_TIMEOUT_S, Target, diagnose, target

log = structlog.get_logger("bindingd.gateway.session")

# A token is renewed once this share of its lifetime has passed.
RENEW_AT = 0.8
# A token this close to its expiry is renewed before a call rather than sent.
EXPIRY_MARGIN_S = 1.0
# Waits between attempts while the gateway cannot be reached, and while nobody is logged in.
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)
NOT_LOGGED_IN_RETRY_S = 5.0
# How long Bindings.List waits for the first session (the bindings it discovers) at start.
DISCOVERY_WAIT_S = 10.0


class State(StrEnum):
    CONNECTING = "connecting"
    READY = "ready"
    NOT_LOGGED_IN = "not logged in"
    EXPIRED = "expired"
    DENIED = "denied"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class RemoteBinding:
    """A binding the gateway serves to this user in the env."""

    name: str
    type: str
    actions: tuple[str, ...]


class GatewaySession:
    def __init__(
        self,
        config: Config,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target: Target = target(config)
        self.env = config.env
        self.url = self.target.url
        # Names bindingd.yaml lists for this env without `local: true`: they must exist there.
        self.listed: Mapping[str, str] = config.remote
        self._environ = os.environ if environ is None else environ
        self._clock = clock
        credentials = grpc.ssl_channel_credentials(root_certificates=self.target.ca_pem)
        self.channel = grpc.aio.secure_channel(
            self.url,
            credentials,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # A gateway that restarts is back within seconds, not grpc's default two minutes.
                ("grpc.initial_reconnect_backoff_ms", 500),
                ("grpc.max_reconnect_backoff_ms", 5_000),
            ],
        )
        self._stub = session_pb2_grpc.SessionStub(self.channel)
        self.state = State.CONNECTING
        self.detail = f"opening a session with gateway {self.url}"
        self.user = ""
        # Whether the gateway protects the env (writes then need --allow-writes here too).
        self.protected = False
        self.bindings: dict[str, RemoteBinding] = {}
        self._token = ""
        self._issued = 0.0
        self._expires = 0.0
        self._error: BindingdError | None = None
        self._lock = asyncio.Lock()
        self._first = asyncio.Event()
        self._renewed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- what the forwarder and the services use -----------------------------------------------

    async def token(self) -> str:
        """A token valid now, renewed first if it is (nearly) expired; or the session's error."""
        if self.state is State.READY and self._clock() < self._expires - EXPIRY_MARGIN_S:
            return self._token
        await self.renew(self._token)
        return self._token

    async def renew(self, stale: str) -> None:
        """Open a new session unless another call already replaced `stale`. Raises the error
        that says why there is no session (not logged in, unreachable, denied, ...)."""
        async with self._lock:
            fresh = self._token != stale and self._clock() < self._expires - EXPIRY_MARGIN_S
            if not (fresh and self.state is State.READY):
                await self._open()
        if self.state is not State.READY:
            assert self._error is not None
            raise self._error

    def metadata(self, token: str, request_id: str | None) -> tuple[tuple[str, str], ...]:
        md: tuple[tuple[str, str], ...] = ((AUTHORIZATION, f"{BEARER}{token}"),)
        if request_id:
            md += (("x-request-id", request_id),)
        return md

    async def discovered(self) -> dict[str, RemoteBinding]:
        """The bindings served through the gateway, after the first attempt to open a session
        (waited for at most DISCOVERY_WAIT_S: a worker starting with the daemon sees them)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), DISCOVERY_WAIT_S)
        return dict(self.bindings)

    def names(self) -> set[str]:
        return {*self.bindings, *self.listed}

    def describe(self, name: str) -> tuple[str, str, str]:
        """(type, health detail, actions) of a remote binding for `bindings`."""
        remote = self.bindings.get(name)
        if remote is None:
            binding_type = self.listed.get(name, "")
            if self.state is State.READY:
                detail = (
                    f"listed in bindingd.yaml but gateway {self.url} grants {self.user} nothing on it "
                    f'in env "{self.env}": ask a gateway admin for a grant'
                )
                return binding_type, detail, ""
            return binding_type, self.detail, ""
        actions = ", ".join(remote.actions)
        if self.state is State.READY:
            until = rfc3339(int(self._expires))
            detail = f"via gateway {self.url} as {self.user}: {actions}; session until {until}"
        else:
            detail = f"via gateway {self.url}: {self.detail}"
        return remote.type, detail, actions

    def error(self) -> BindingdError:
        if self._error is not None:
            return self._error
        return backend_unavailable(f'the session with gateway {self.url} (env "{self.env}") is not open yet')

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._keep())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.channel.close()

    async def _keep(self) -> None:
        """Open the session, then renew it at 80 % of each token's lifetime; while it cannot
        be opened, try again (sooner while the gateway is unreachable than while nobody is
        logged in, which takes a person)."""
        failures = 0
        while True:
            try:
                async with self._lock:
                    await self._open()
            except Exception as e:  # a bug must not end the session's upkeep unseen
                log.exception("gateway session failed unexpectedly", env=self.env, gateway=self.url)
                self._fail(
                    backend_unavailable(f"the session with gateway {self.url} failed unexpectedly: {e}")
                )
            self._first.set()
            if self.state is State.READY:
                failures = 0
                lifetime = max(self._expires - self._issued, 1.0)
                wait = self._issued + lifetime * RENEW_AT - self._clock()
            elif self.state is State.NOT_LOGGED_IN:
                wait = NOT_LOGGED_IN_RETRY_S
            else:
                wait = RETRY_S[min(failures, len(RETRY_S) - 1)]
                failures += 1
            await asyncio.sleep(max(wait, 0.05))

    async def _open(self) -> None:
        """Challenge, sign, Open; the state, and on failure the error calls will get. Called
        with the lock held."""
        try:
            key = await asyncio.to_thread(device.load, self.url, self._environ)
            if key is None:
                raise BindingdError(
                    Reason.NOT_LOGGED_IN,
                    f'not logged in to gateway {self.url} for env "{self.env}": run '
                    f"`bindingd login --env {self.env}` (with the one-time code from your gateway admin)",
                )
            challenge = await self._call(self._stub.Challenge, session_pb2.ChallengeRequest())
            signature = key.sign_challenge(challenge.gateway_id, self.env, challenge.nonce)
            opened = await self._call(
                self._stub.Open,
                session_pb2.OpenRequest(
                    env=self.env, thumbprint=key.thumbprint, nonce=challenge.nonce, signature=signature
                ),
            )
        except BindingdError as e:
            self._fail(e)
            return
        self._token, self.user, self.protected = opened.token, opened.user, opened.protected
        self._issued, self._expires = self._clock(), float(opened.expires)
        self.bindings = {
            name: RemoteBinding(name, actions.type, tuple(actions.actions))
            for name, actions in sorted(opened.bindings.items())
        }
        was = self.state
        self.state, self._error = State.READY, None
        self.detail = f"session open as {self.user} until {rfc3339(opened.expires)}"
        if was is not State.READY:
            log.info(
                "gateway session open",
                env=self.env,
                gateway=self.url,
                user=self.user,
                bindings=len(self.bindings),
                until=rfc3339(opened.expires),
            )
        missing = sorted(set(self.listed) - set(self.bindings))
        if missing and was is not State.READY:
            log.warning(
                "bindings listed in bindingd.yaml are not granted by the gateway",
                env=self.env,
                gateway=self.url,
                bindings=missing,
            )

    def _fail(self, e: BindingdError) -> None:
        state = {
            Reason.NOT_LOGGED_IN: State.NOT_LOGGED_IN,
            Reason.TOKEN_REVOKED: State.NOT_LOGGED_IN,
            Reason.SESSION_EXPIRED: State.EXPIRED,
            Reason.POLICY_DENIED: State.DENIED,
            Reason.PERMISSION_DENIED: State.DENIED,
        }.get(e.reason, State.UNREACHABLE)
        if e.reason is Reason.TOKEN_REVOKED:
            e = BindingdError(
                Reason.TOKEN_REVOKED,
                f'gateway {self.url} revoked this device\'s access for env "{self.env}": '
                f"log in again with `bindingd login --env {self.env}` (and a new code from your admin)",
            )
        e = e.with_context(binding=e.binding, env=self.env, backend=e.backend or "gateway")
        if self.state is State.READY and self._clock() < self._expires:
            # A renewal failed while the token still holds: keep serving with it; say so once.
            log.warning("gateway session renewal failed", env=self.env, gateway=self.url, error=e.message)
            return
        if self.state is not state or (self._error and self._error.message != e.message):
            log.warning("gateway session not open", env=self.env, gateway=self.url, error=e.message)
        self.state, self._error, self.detail = state, e, e.message
        self._token = ""

    async def _call(self, method: grpc.aio.UnaryUnaryMultiCallable, request: object) -> object:
        try:
            return await method(request, timeout=CALL_TIMEOUT_S)  # type: ignore[no-any-return]
        except grpc.aio.AioRpcError as e:
            raise await gateway_failure(self.target, e) from None


async def gateway_failure(t: Target, e: grpc.aio.AioRpcError) -> BindingdError:
    """A failed call to the gateway in bindingd's words: its own error when it answered with one,
    else why it could not be reached (found by probing, off the event loop)."""
    from bindingd.providers.gateway.target import gateway_error

    if e.code() == grpc.StatusCode.UNAVAILABLE:
        return await asyncio.to_thread(diagnose, t)
    return gateway_error(t, e)
