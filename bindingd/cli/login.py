"""`bindingd login --env ENV [--code CODE]` and `bindingd logout --env ENV`: the developer's side
of a gateway (the env's `gateway: {url, ca}` in bindingd.yaml).

login enrols this device's Ed25519 key (bindingd/gateway/device.py: one key per gateway url,
0600 under $XDG_CONFIG_HOME/bindingd/, or BINDINGD_GATEWAY_KEY) with a one-time code from
`bindingd gateway grant`, then proves the session works: it answers a challenge, opens a
session for the env and prints what the gateway grants there and until when. logout tells the
gateway to forget the device (best effort: it needs the gateway) and deletes the key file.

The connection trusts the env's CA file only. What can go wrong is said in bindingd's words,
never as a raw TLS or gRPC message: an unreachable gateway is BACKEND_UNAVAILABLE naming its
address; a certificate the CA did not sign names the CA file, its fingerprint and the one seen.
An access token is never printed or logged; the enrolment code is read without echo and never
repeated.

Exit codes as the rest of the CLI: 0 done, 1 the gateway refused or could not be reached, 2 a
usage or config mistake (no gateway for the env, no CA file, no code without a terminal).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from bindingd_client.proto import session_pb2, session_pb2_grpc
from bindingd_client.wire import AUTHORIZATION, BEARER

from bindingd.config import ConfigError, load_config
from bindingd.errors import BindingdError, Reason
from bindingd.gateway import device
from bindingd.gateway.device import DeviceKey
from bindingd.gateway.tokens import rfc3339
from bindingd.providers.gateway.target import (
    CALL_TIMEOUT_S,
    Target,
    UsageError,
    gateway_error,
    open_channel,
    target,
)

EXIT_FAILED = 1
EXIT_CONFIG = 2

T = TypeVar("T")


def _fail(message: str) -> None:
    print(f"bindingd: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"bindingd: warning: {message}", file=sys.stderr)


def call(t: Target, fn: Callable[..., T], request: Any, metadata: Sequence[tuple[str, str]] = ()) -> T:
    """One Session call; its failure as a BindingdError in bindingd's words."""
    try:
        return fn(request, timeout=CALL_TIMEOUT_S, metadata=tuple(metadata) or None)
    except grpc.RpcError as e:
        raise gateway_error(t, e) from None


@dataclass(frozen=True)
class Opened:
    gateway_id: str
    user: str
    token: str  # never printed or logged
    expires: int
    bindings: dict[str, list[str]]


def open_session(t: Target, stub: session_pb2_grpc.SessionStub, key: DeviceKey) -> Opened:
    """Challenge, sign, Open: a token for the env, as the daemon will get one."""
    challenge = call(t, stub.Challenge, session_pb2.ChallengeRequest())
    signature = key.sign_challenge(challenge.gateway_id, t.env, challenge.nonce)
    request = session_pb2.OpenRequest(
        env=t.env, thumbprint=key.thumbprint, nonce=challenge.nonce, signature=signature
    )
    opened = call(t, stub.Open, request)
    bindings = {name: list(actions.actions) for name, actions in sorted(opened.bindings.items())}
    return Opened(challenge.gateway_id, opened.user, opened.token, opened.expires, bindings)


# -- the commands -----------------------------------------------------------------------------


def read_code(given: str | None) -> str:
    if given is not None:
        if not given.strip():
            raise UsageError("--code is empty: pass the one-time code `bindingd gateway grant` printed")
        return given
    if not sys.stdin.isatty():
        raise UsageError(
            "no enrolment code: pass --code CODE (stdin is not a terminal, so bindingd does not prompt)"
        )
    code = getpass.getpass("one-time enrolment code (from your gateway admin): ")
    if not code.strip():
        raise UsageError("no enrolment code entered")
    return code


def login(t: Target, code: str) -> None:
    key = device.load_or_create(t.url)
    with open_channel(t) as channel:
        stub = session_pb2_grpc.SessionStub(channel)
        # The gateway's id first: the enrolment proof signs it with the code.
        challenge = call(t, stub.Challenge, session_pb2.ChallengeRequest())
        proof = key.enrolment_proof(challenge.gateway_id, code)
        request = session_pb2.EnrolRequest(code=code, device_public_key=key.public_raw, proof=proof)
        enrolled = call(t, stub.Enrol, request)
        print(
            f"enrolled this device at gateway {enrolled.gateway_id} ({t.url}) as user {enrolled.user}; "
            f"device key: {key.source}"
        )
        session = open_session(t, stub, key)
    print(f'env "{t.env}": session open until {rfc3339(session.expires)} (the daemon renews it)')
    if not session.bindings:
        print(f'nothing is granted to {session.user} in env "{t.env}" yet: ask a gateway admin for a grant')
        return
    width = max(len(name) for name in session.bindings)
    print("granted bindings:")
    for name, actions in session.bindings.items():
        print(f"  {name:<{width}}  {', '.join(actions)}")


def logout(t: Target) -> None:
    key = device.load(t.url)
    if key is None:
        path = device.key_path(t.url)
        print(f"not logged in to gateway {t.url}: there is no device key {path}")
        return
    try:
        with open_channel(t) as channel:
            stub = session_pb2_grpc.SessionStub(channel)
            session = open_session(t, stub, key)
            metadata = ((AUTHORIZATION, f"{BEARER}{session.token}"),)
            call(t, stub.Logout, session_pb2.LogoutRequest(), metadata)
        print(f"gateway {session.gateway_id} ({t.url}) forgot this device (user {session.user})")
    except BindingdError as e:
        if e.reason in (Reason.TOKEN_REVOKED, Reason.NOT_LOGGED_IN):
            print(f"gateway {t.url} no longer accepts this device ({e.reason.value})")
        else:
            _warn(
                f"{e.message}; the gateway may still accept this device: ask an admin to run "
                "`bindingd gateway revoke --user NAME` if it matters"
            )
    if key.source == device.KEY_ENV:
        print(f"the device key comes from {device.KEY_ENV}: not deleted here (unset it, delete the secret)")
    elif device.forget(t.url):
        print(f"deleted the device key {key.source}")


def cmd_login(args: argparse.Namespace) -> int:
    return _run(args, lambda t: login(t, read_code(args.code)))


def cmd_logout(args: argparse.Namespace) -> int:
    return _run(args, logout)


def _run(args: argparse.Namespace, action: Callable[[Target], None]) -> int:
    try:
        action(target(load_config(args.config, env=args.env)))
        return 0
    except (UsageError, ConfigError) as e:
        _fail(str(e))
        return EXIT_CONFIG
    except BindingdError as e:
        _fail(f"{e.message} ({e.reason.value})")
        return EXIT_FAILED
