"""The gateway's Session service over gRPC (proto/bindingd/v1/session.proto): enrol a device,
hand out a challenge, open a session (an access token) for an env, log a device out.

The logic is `bindingd.gateway.sessions.Sessions`; this module reads requests, asks the
gateway's config what the env grants and how long its tokens live, and turns every failure into
the daemon's error trailer (the `ErrorInfo` the clients map to NotLoggedIn, TokenRevoked, ...).
A message never carries a token or an enrolment code, and a bug answers INTERNAL with a request
id, never a traceback.

`gateway serve` registers it with `add_to_server` and replaces `config` on SIGHUP.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog
from bindingd_client.proto import session_pb2, session_pb2_grpc
from bindingd_client.wire import AUTHORIZATION, BEARER

from bindingd.errors import BindingdError, Reason, invalid_argument
from bindingd.gateway.config import GatewayConfig
from bindingd.gateway.sessions import Sessions
from bindingd.gateway.tokens import HEADER
from bindingd.server.calls import abort, add_service, request_id_of

log = structlog.get_logger("bindingd.gateway.session")

SIGNATURE_BYTES = 64  # Ed25519: a v4.public payload is the message then its signature

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def session_rpc(
    method: Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    """The daemon's `rpc` wrapper for a service without a Runtime: a BindingdError becomes its
    table's status with the ErrorInfo trailer; anything else is logged and answers INTERNAL."""
    name = method.__qualname__

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except BindingdError as e:
            request_id = request_id_of(context)
            log.info("session call failed", method=name, reason=e.reason.value, request_id=request_id)
            await abort(context, e, request_id)
        except Exception:
            request_id = request_id_of(context)
            log.exception("unexpected failure", method=name, request_id=request_id)
            err = BindingdError(
                Reason.INTERNAL,
                f"the gateway failed unexpectedly (request id {request_id}); its log has the details",
            )
            await abort(context, err, request_id)
        raise AssertionError("unreachable: abort raises")

    return wrapper


def bearer_token(context: grpc.aio.ServicerContext) -> str | None:
    """The `authorization: Bearer <token>` of the call, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == AUTHORIZATION and isinstance(value, str) and value.startswith(BEARER):
            return value[len(BEARER) :].strip() or None
    return None


def token_env(token: str) -> str | None:
    """The `env` claim read before verifying (the token is then verified for that env): Logout
    carries no env, and a token of any env proves the device. None when it is not readable."""
    parts = token.split(".")
    if len(parts) < 3 or f"{parts[0]}.{parts[1]}." != HEADER:
        return None
    try:
        raw = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
        env = json.loads(raw[:-SIGNATURE_BYTES]).get("env")
    except (ValueError, UnicodeError, AttributeError):
        return None
    return env if isinstance(env, str) else None


class SessionService(session_pb2_grpc.SessionServicer):
    """Session on a `Sessions`. `config` is the gateway.yaml in force: replace it to reload."""

    def __init__(self, sessions: Sessions, config: GatewayConfig) -> None:
        self.sessions = sessions
        self.config = config

    @session_rpc
    async def Enrol(
        self, request: session_pb2.EnrolRequest, context: grpc.aio.ServicerContext
    ) -> session_pb2.EnrolResponse:
        if not request.code:
            raise invalid_argument("an enrolment needs the one-time code (`bindingd gateway grant`)")
        device = await self.sessions.enrol(request.code, request.device_public_key, request.proof)
        log.info("device enrolled", user=device.user, device=device.thumbprint)
        return session_pb2.EnrolResponse(
            user=device.user, gateway_id=self.sessions.gateway_id, thumbprint=device.thumbprint
        )

    @session_rpc
    async def Challenge(
        self, request: session_pb2.ChallengeRequest, context: grpc.aio.ServicerContext
    ) -> session_pb2.ChallengeResponse:
        return session_pb2.ChallengeResponse(
            nonce=self.sessions.challenge(), gateway_id=self.sessions.gateway_id
        )

    @session_rpc
    async def Open(
        self, request: session_pb2.OpenRequest, context: grpc.aio.ServicerContext
    ) -> session_pb2.OpenResponse:
        config = self.config  # one config for the whole call, whatever a reload does meanwhile
        env = config.envs.get(request.env)
        if env is None:
            # Not the list of envs: the caller is not authenticated yet.
            raise invalid_argument(
                f'gateway "{self.sessions.gateway_id}" serves no env "{request.env}"; check the env '
                "name, or ask a gateway admin which envs it serves"
            )
        types = {name: binding.type for name, binding in env.bindings.items()}

        def grants_for(user: str, groups: tuple[str, ...], env_name: str) -> dict[str, list[str]]:
            return config.policy.granted(user, groups, env_name, types)

        session = await self.sessions.open(
            env.name, request.thumbprint, request.nonce, request.signature, grants_for, env.token_ttl
        )
        claims = session.claims
        log.info("session opened", user=claims.sub, env=claims.env, jti=claims.jti, device=claims.jkt)
        return session_pb2.OpenResponse(
            token=session.token,
            expires=claims.exp,
            user=claims.sub,
            bindings={
                name: session_pb2.Actions(actions=list(a), type=types.get(name, ""))
                for name, a in claims.bindings.items()
            },
            protected=env.protected,
        )

    @session_rpc
    async def Logout(
        self, request: session_pb2.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> session_pb2.LogoutResponse:
        gateway = self.sessions.gateway_id
        token = bearer_token(context)
        if token is None:
            raise BindingdError(
                Reason.NOT_LOGGED_IN,
                f'logging out of gateway "{gateway}" needs the session\'s access token '
                "(authorization: Bearer); `bindingd logout --env ENV` sends it",
            )
        env = token_env(token)
        if env is None:
            raise BindingdError(
                Reason.NOT_LOGGED_IN,
                f'not logged in to gateway "{gateway}": the access token is not one this gateway '
                "issues; run `bindingd login --env ENV`",
            )
        # Verified in full (signature, audience, time, revocations): the device logged out is the
        # one the token is bound to (cnf.jkt), never one the caller names.
        claims = self.sessions.verify(token, env)
        await self.sessions.logout(claims.jkt)
        log.info("device logged out", user=claims.sub, device=claims.jkt)
        return session_pb2.LogoutResponse()


def add_to_server(server: grpc.aio.Server, servicer: SessionService) -> None:
    """Register Session, decoding requests as the daemon's services do (a malformed message is
    INVALID_ARGUMENT, not UNKNOWN)."""
    add_service(server, servicer, session_pb2.DESCRIPTOR.services_by_name["Session"])
