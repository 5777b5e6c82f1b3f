"""`bindingd gateway init DIR`: the files a gateway needs to start, for a team without a PKI.

It writes, in DIR (made 0700):
- `ca.pem`: a development CA's certificate. Developers put it beside their bindingd.yaml
  (`gateway: {ca: team-ca.pem}`); the daemon trusts that CA only, for that gateway only.
- `server.pem`, `server.key` (0600): the gateway's TLS certificate, signed by that CA, for
  `localhost` and `127.0.0.1` plus every `--host` (the team's real name or address).
- `signing.key` (0600): the Ed25519 key the gateway signs access tokens with (PKCS8 PEM,
  unencrypted: the gateway reads it at start without a prompt; tokens.load_signing_key).

The CA's private key is not written anywhere: it signs the server certificate and is gone, so
nothing lying beside the gateway can mint another certificate the developers' daemons would
trust. To add a host name later, run init again with `--force` (a new CA: developers take the
new ca.pem and check its new fingerprint).

The CA's fingerprint, `sha256:` and 64 lowercase hex digits (the SHA-256 of the certificate's
DER, what `openssl x509 -noout -fingerprint -sha256` prints in another spelling), is how a
developer checks that the ca.pem they were sent is the team's: it goes round by another
channel than the file itself.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bindingd.providers.local.sqlite import private_folder

CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server.key"
SIGNING_KEY_FILE = "signing.key"
FILES = (CA_FILE, CERT_FILE, KEY_FILE, SIGNING_KEY_FILE)
PRIVATE = frozenset({KEY_FILE, SIGNING_KEY_FILE})

DEFAULT_HOSTS = ("localhost", "127.0.0.1")  # pinned
CA_DAYS = 10 * 365
# 825 days: the longest validity Apple's TLS stack accepts from a private CA's server certificate.
SERVER_DAYS = 825
# Not-before an hour back, so a machine whose clock is a little behind accepts a fresh certificate.
BACKDATE = datetime.timedelta(hours=1)

# A DNS name as a certificate carries it: ASCII labels (IDNA for others), an optional "*." first.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*\.?$")


class PkiError(Exception):
    """Why init wrote nothing: a file already there, a host that is no name or address."""


@dataclass(frozen=True)
class Written:
    folder: Path
    hosts: tuple[str, ...]
    fingerprint: str


def fingerprint(cert_pem: bytes) -> str:
    """`sha256:` + the lowercase hex SHA-256 of the certificate's DER."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def normalise_fingerprint(text: str) -> str:
    """Any common spelling of a SHA-256 fingerprint in ours: `sha256:ab12...`, openssl's
    `sha256 Fingerprint=AB:12:...`, bare hex with or without colons."""
    value = text.strip()
    if "=" in value:
        value = value.split("=", 1)[1]
    value = value.lower().removeprefix("sha256:").replace(":", "").strip()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"{text.strip()!r} is not a SHA-256 fingerprint (sha256: and 64 hex digits)")
    return "sha256:" + value


def parse_hosts(extra: Iterable[str]) -> tuple[str, ...]:
    """The pinned names, then each `--host` once: an IP address, or a DNS name (IDNA-encoded)."""
    hosts: list[str] = list(DEFAULT_HOSTS)
    for raw in extra:
        host = raw.strip()
        try:
            host = str(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            try:
                host = host.encode("idna").decode("ascii").lower()
            except UnicodeError:
                host = ""
            if not _DNS_NAME.match(host):
                raise PkiError(
                    f"--host {raw!r} is neither a DNS name nor an IP address (no port, no scheme)"
                ) from None
            host = host.rstrip(".")
        if host not in hosts:
            hosts.append(host)
    return tuple(hosts)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bindingd gateway"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates (and CRLs); an ECDSA server key only signs handshakes."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_files(hosts: Sequence[str], now: datetime.datetime | None = None) -> dict[str, bytes]:
    """The four files' contents (PEM), by file name. ECDSA P-256 for TLS: every TLS stack
    (OpenSSL, BoringSSL in gRPC, Node, Go) takes it; Ed25519 for the token signing key."""
    start = (now or datetime.datetime.now(datetime.UTC)) - BACKDATE
    ca_key = ec.generate_private_key(ec.SECP256R1())
    # A random suffix tells two teams' (or two runs') development CAs apart in a trust store.
    ca_name = _name(f"bindingd gateway development CA {secrets.token_hex(4)}")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_alt_name(h) for h in hosts]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pkcs8 = serialization.PrivateFormat.PKCS8
    pem = serialization.Encoding.PEM
    clear = serialization.NoEncryption()
    return {
        CA_FILE: ca.public_bytes(pem),
        CERT_FILE: server.public_bytes(pem),
        KEY_FILE: server_key.private_bytes(pem, pkcs8, clear),
        SIGNING_KEY_FILE: Ed25519PrivateKey.generate().private_bytes(pem, pkcs8, clear),
    }


def _write(folder: Path, name: str, data: bytes, *, force: bool) -> None:
    """Write through a temporary file so a file is never seen half written. Without `force`
    the final step is a link, which fails if the name exists: a file made meanwhile survives."""
    path = folder / name
    tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            # Certificates are public; a umask must not take their read bits (nor give any).
            os.fchmod(f.fileno(), 0o600 if name in PRIVATE else 0o644)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise PkiError(
                    f"{path} already exists (nothing was overwritten; --force replaces it)"
                ) from None
    finally:
        tmp.unlink(missing_ok=True)


def init(folder: Path, hosts: Iterable[str] = (), *, force: bool = False) -> Written:
    """Create the CA, server certificate and signing key in `folder`; refuse to replace any
    existing one unless `force` (then all four are new: a new CA, a new signing key)."""
    names = parse_hosts(hosts)
    if not force:
        existing = [
            str(folder / name) for name in FILES if (folder / name).exists() or (folder / name).is_symlink()
        ]
        if existing:
            raise PkiError(
                f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                "nothing was written (--force replaces them all: a new CA and a new signing key)"
            )
    if folder.exists() and not folder.is_dir():
        raise PkiError(f"{folder} exists and is not a folder")
    try:
        private_folder(folder)
        os.chmod(folder, 0o700)  # it holds private keys: an existing folder is tightened too
        files = make_files(names)
        for name in FILES:
            _write(folder, name, files[name], force=force)
    except OSError as e:
        raise PkiError(f"cannot write in {folder}: {e.strerror or e}") from None
    return Written(folder, names, fingerprint(files[CA_FILE]))
