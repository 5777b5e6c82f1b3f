"""The laptop side of a gateway login: the Ed25519 device key, and what it signs.

One key per gateway, under `$XDG_CONFIG_HOME/bindingd/` (default `~/.config/bindingd/`), in a
0600 file in a 0700 folder; like ssh, a key file others can read is refused, not used. For CI,
`BINDINGD_GATEWAY_KEY` holds the key itself (PKCS8 PEM text, as CI secrets are usually stored)
or the path of a PEM file; it is never created or deleted here.

The gateway checks two signatures made with this key (sessions.py): the enrolment proof, over
the one-time code and the gateway id, and each session's challenge, over the gateway id, the env
and the gateway's nonce. Each message starts with its purpose, so one can never pass for the other.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bindingd.errors import BindingdError, Reason
from bindingd.gateway.tokens import raw_public, thumbprint
from bindingd.providers.local.sqlite import private_folder

KEY_ENV = "BINDINGD_GATEWAY_KEY"


def enrol_message(gateway_id: str, code: str) -> bytes:
    """What the enrolment proof signs (`code` as normalise_code leaves it)."""
    return f"bindingd gateway enrol v1\n{gateway_id}\n{code}".encode()


def open_message(gateway_id: str, env: str, nonce: str) -> bytes:
    """What a session's challenge answer signs."""
    return f"bindingd gateway open v1\n{gateway_id}\n{env}\n{nonce}".encode()


def normalise_code(code: str) -> str:
    """An enrolment code as typed or pasted: case, spaces and dashes do not matter."""
    return re.sub(r"[\s-]", "", code).upper()


@dataclass(frozen=True)
class DeviceKey:
    private: Ed25519PrivateKey
    source: str  # where it came from, for messages: a path or the environment variable
    thumbprint: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "thumbprint", thumbprint(self.private.public_key()))

    @property
    def public_raw(self) -> bytes:
        return raw_public(self.private.public_key())

    def enrolment_proof(self, gateway_id: str, code: str) -> bytes:
        return self.private.sign(enrol_message(gateway_id, normalise_code(code)))

    def sign_challenge(self, gateway_id: str, env: str, nonce: str) -> bytes:
        return self.private.sign(open_message(gateway_id, env, nonce))


def verify_signature(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    """Whether `signature` is the Ed25519 signature of `message` by the raw public key."""
    from cryptography.exceptions import InvalidSignature

    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec: a relative XDG_CONFIG_HOME is invalid and ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "bindingd"


def key_path(gateway: str, environ: Mapping[str, str] | None = None) -> Path:
    """The key file for a gateway (its id or URL): a readable, safe file name; a short hash of
    the original keeps two names that sanitise alike ("gw:8443", "gw_8443") apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", gateway).strip(".") or "gateway"
    if safe != gateway:
        safe = f"{safe}-{hashlib.sha256(gateway.encode()).hexdigest()[:8]}"
    return config_dir(environ) / f"gateway-{safe}.key"


def not_logged_in(message: str) -> BindingdError:
    return BindingdError(Reason.NOT_LOGGED_IN, message)


def parse_pem(data: bytes, source: str) -> DeviceKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # Never the text itself: it may be a key.
        raise not_logged_in(f"the device key in {source} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise not_logged_in(f"the device key in {source} is not an Ed25519 key")
    return DeviceKey(key, source)


def read_private_file(path: Path) -> bytes:
    """A key file's bytes, refused (as ssh does) when other users could read or change it."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid():
            raise not_logged_in(f"the device key {path} belongs to another user; remove it and log in again")
        if info.st_mode & 0o077:
            raise not_logged_in(
                f"the device key {path} is accessible by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run `chmod 600 {path}` or remove it and log in again"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def from_environment(environ: Mapping[str, str]) -> DeviceKey | None:
    value = environ.get(KEY_ENV, "").strip()
    if not value:
        return None
    if "-----BEGIN" in value:
        return parse_pem(value.encode(), KEY_ENV)
    path = Path(value).expanduser()
    try:
        data = read_private_file(path)
    except OSError as e:
        raise not_logged_in(f"cannot read the device key {path} named by {KEY_ENV}: {e.strerror}") from None
    return parse_pem(data, str(path))


def load(gateway: str, environ: Mapping[str, str] | None = None) -> DeviceKey | None:
    """The device key for `gateway`: from BINDINGD_GATEWAY_KEY if set, else its file; None when
    there is none yet (not logged in)."""
    environ = os.environ if environ is None else environ
    key = from_environment(environ)
    if key is not None:
        return key
    path = key_path(gateway, environ)
    try:
        data = read_private_file(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise not_logged_in(f"cannot read the device key {path}: {e.strerror}") from None
    return parse_pem(data, str(path))


def load_or_create(gateway: str, environ: Mapping[str, str] | None = None) -> DeviceKey:
    """The device key for `gateway`, created (0600, folder 0700) on the first login."""
    environ = os.environ if environ is None else environ
    key = load(gateway, environ)
    if key is not None:
        return key
    path = key_path(gateway, environ)
    private_folder(path.parent)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Written whole under a temporary name, then linked into place: a concurrent login never
    # reads half a key, and if two race, both end up with the one that was linked first.
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(pem)
            f.flush()
            os.fsync(fd)
        os.fchmod(fd, 0o600)  # a umask can only take bits away, but be explicit
        with contextlib.suppress(FileExistsError):  # another login linked its key first
            os.link(temp, path)
    finally:
        os.close(fd)
        temp.unlink(missing_ok=True)
    key = load(gateway, environ)
    assert key is not None
    return key


def forget(gateway: str, environ: Mapping[str, str] | None = None) -> bool:
    """Delete the device key file (logout); False if there was none. A key given through
    BINDINGD_GATEWAY_KEY is left alone: it is not ours to delete."""
    try:
        key_path(gateway, environ).unlink()
    except FileNotFoundError:
        return False
    return True
