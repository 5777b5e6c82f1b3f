"""Where an env's gateway is and how to reach it: its url and the one CA trusted for it, and
what goes wrong said in bindingd's words (never a raw TLS or gRPC message). Used by `bindingd
login`/`logout` and by the daemon's gateway session.

An unreachable gateway is BACKEND_UNAVAILABLE naming its address; a certificate the CA did not
sign names the CA file, its fingerprint and the one seen.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

import grpc
from bindingd_client.errors import error_from_rpc

from bindingd.config import Config, Gateway
from bindingd.errors import BindingdError, Reason, backend_unavailable
from bindingd.gateway import pki

CALL_TIMEOUT_S = 15.0
PROBE_TIMEOUT_S = 5.0


class UsageError(Exception):
    pass


@dataclass(frozen=True)
class Target:
    """The env's gateway and the CA certificate trusted for it, read and checked."""

    env: str
    gateway: Gateway
    ca_pem: bytes
    ca_fingerprint: str

    @property
    def url(self) -> str:
        return self.gateway.url


def target(config: Config) -> Target:
    gw = config.gateway
    if gw is None:
        raise UsageError(
            f'env "{config.env}" names no gateway in {config.path}: add '
            f'`gateway: {{url: "HOST:PORT", ca: team-ca.pem}}` under envs.{config.env}'
        )
    where = f"{gw.ca_location}: " if gw.ca_location else ""
    try:
        ca_pem = gw.ca.read_bytes()
    except OSError as e:
        raise UsageError(f"{where}cannot read the gateway's CA certificate {gw.ca}: {e.strerror}") from None
    try:
        fingerprint = pki.fingerprint(ca_pem)
    except ValueError:
        raise UsageError(
            f"{where}{gw.ca} is not a PEM certificate (the gateway's ca.pem, from `bindingd gateway init`)"
        ) from None
    return Target(config.env, gw, ca_pem, fingerprint)


def open_channel(t: Target) -> grpc.Channel:
    """A TLS channel to the gateway that trusts the env's CA and nothing else."""
    credentials = grpc.ssl_channel_credentials(root_certificates=t.ca_pem)
    return grpc.secure_channel(t.url, credentials)


def diagnose(t: Target) -> BindingdError:
    """Why the gateway could not be used, found by connecting once more with Python's own TLS
    (gRPC's message says only "failed to connect"): unreachable, or a certificate the CA did
    not sign or not for this host."""
    try:
        raw = socket.create_connection((t.gateway.host, t.gateway.port), timeout=PROBE_TIMEOUT_S)
    except OSError as e:
        return unreachable(t, e.strerror or type(e).__name__)
    context = ssl.create_default_context(cafile=str(t.gateway.ca))  # this CA only
    try:
        with raw, context.wrap_socket(raw, server_hostname=t.gateway.host):
            pass
    except ssl.SSLCertVerificationError as e:
        return wrong_certificate(t, e)
    except (ssl.SSLError, OSError) as e:
        return unreachable(t, f"the TLS handshake failed ({type(e).__name__})")
    # Reachable now: the call's own connection was cut, or something else listens there.
    return backend_unavailable(
        f'gateway {t.url} (env "{t.env}") accepts TLS connections, but the call got no gRPC '
        "answer: its connection was cut (an instance stopping, a load balancer, the network), or "
        "this url is not a bindingd gateway; try again, and check the url in bindingd.yaml if "
        "it goes on"
    )


def unreachable(t: Target, why: str) -> BindingdError:
    return backend_unavailable(
        f'cannot reach gateway {t.url} (env "{t.env}"): {why}; check the url in bindingd.yaml '
        "and that the gateway is running and reachable from here"
    )


def seen_certificate(t: Target) -> str:
    """What the gateway presents, unverified, for the message: its fingerprint and issuer."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((t.gateway.host, t.gateway.port), timeout=PROBE_TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=t.gateway.host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return "(the certificate could not be read)"
    if not der:
        return "(no certificate)"
    from cryptography import x509

    issuer = x509.load_der_x509_certificate(der).issuer.rfc4514_string() or "(no name)"
    return f"{pki.fingerprint(ssl.DER_cert_to_PEM_cert(der).encode())}, issued by {issuer}"


def wrong_certificate(t: Target, e: ssl.SSLCertVerificationError) -> BindingdError:
    seen = seen_certificate(t)
    ca = f"{t.gateway.ca} ({t.ca_fingerprint})"
    if "hostname" in (e.verify_message or "").lower():
        why = (
            f"its certificate ({seen}) is signed by the CA {ca} but is not for "
            f'"{t.gateway.host}"; use a name the certificate lists, or have the admin add it '
            "(`bindingd gateway init --host NAME --force`)"
        )
    else:
        why = (
            f"its certificate ({seen}) is not signed by the CA {ca}; check that this ca file is "
            "your team's (compare the fingerprint with the one `bindingd gateway init` printed) "
            "and that the url names your gateway"
        )
    return backend_unavailable(f'not connecting to gateway {t.url} (env "{t.env}"): {why}')


def gateway_error(t: Target, e: grpc.RpcError) -> BindingdError:
    client = error_from_rpc(e)
    if client.reason in Reason.__members__ and client.code is not None and client.request_id is not None:
        # The gateway answered with bindingd's ErrorInfo: its message is written for people.
        return BindingdError(Reason(client.reason), client.message, env=t.env)
    # grpc.aio's AioRpcError has code() but is no grpc.Call.
    code = e.code() if isinstance(e, (grpc.Call, grpc.aio.AioRpcError)) else None
    if code == grpc.StatusCode.UNAVAILABLE:
        return diagnose(t)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return BindingdError(
            Reason.BACKEND_TIMEOUT, f"gateway {t.url} did not answer within {CALL_TIMEOUT_S:g} s"
        )
    if code == grpc.StatusCode.CANCELLED:
        # No bindingd gateway cancels a call it is answering before its grace period is over;
        # a stopping one (or a load balancer in front of it) cancels what had not reached it yet.
        return backend_unavailable(
            f"gateway {t.url} cancelled the call before answering it (an instance stopping, or a "
            "load balancer in front of it cutting the call)"
        )
    name = code.name if code is not None else "an unknown status"
    return backend_unavailable(
        f"gateway {t.url} answered with {name} and no bindingd error: is this url a bindingd gateway?"
    )
