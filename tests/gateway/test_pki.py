"""`bindingd gateway init`'s files: a real TLS 1.3 handshake on loopback with them, the modes,
the fingerprint as openssl computes it, the signing key as tokens.py reads it, no overwrite."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from bindingd.gateway import pki, tokens


@pytest.fixture
def gw(tmp_path: Path) -> pki.Written:
    return pki.init(tmp_path / "gw", ["gw.example.com", "10.1.2.3"])


class TlsServer:
    """A Python ssl server on a loopback port with the gateway's certificate: it accepts each
    connection, completes the handshake (or fails it) and answers one line."""

    def __init__(self, folder: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_3
        self.context.load_cert_chain(folder / pki.CERT_FILE, folder / pki.KEY_FILE)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello\n")
            except (ssl.SSLError, OSError):
                conn.close()  # the client refused our certificate: next one

    def close(self) -> None:
        # close() alone does not wake a thread blocked in accept() on Linux; shutdown() does.
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(gw: pki.Written) -> Iterator[TlsServer]:
    s = TlsServer(gw.folder)
    try:
        yield s
    finally:
        s.close()


def handshake(port: int, ca: Path, server_name: str) -> tuple[str, bytes]:
    """Connect to 127.0.0.1:port trusting only `ca`, checking the certificate for `server_name`."""
    context = ssl.create_default_context(cafile=str(ca))  # CERT_REQUIRED, check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        return str(tls.version()), tls.recv(16)


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "gw.example.com"])
def test_tls13_handshake_trusting_only_the_ca(gw: pki.Written, server: TlsServer, name: str) -> None:
    assert handshake(server.port, gw.folder / pki.CA_FILE, name) == ("TLSv1.3", b"hello\n")


def test_a_name_the_certificate_does_not_carry_is_refused(gw: pki.Written, server: TlsServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(server.port, gw.folder / pki.CA_FILE, "other.example.com")


def test_a_client_trusting_another_ca_refuses_the_server(
    gw: pki.Written, server: TlsServer, tmp_path: Path
) -> None:
    other = pki.init(tmp_path / "other")
    assert other.fingerprint != gw.fingerprint
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        handshake(server.port, other.folder / pki.CA_FILE, "localhost")


def test_the_certificates_say_what_they_are(gw: pki.Written) -> None:
    ca = x509.load_pem_x509_certificate((gw.folder / pki.CA_FILE).read_bytes())
    cert = x509.load_pem_x509_certificate((gw.folder / pki.CERT_FILE).read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.DNSName) == ["localhost", "gw.example.com"]
    assert [str(ip) for ip in alt.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.1.2.3"]
    assert cert.issuer == ca.subject
    assert cert.not_valid_before_utc.timestamp() < time.time() < cert.not_valid_after_utc.timestamp()


def test_modes(gw: pki.Written) -> None:
    assert stat.S_IMODE(gw.folder.stat().st_mode) == 0o700
    modes = {name: stat.S_IMODE((gw.folder / name).stat().st_mode) for name in pki.FILES}
    assert modes == {"ca.pem": 0o644, "server.pem": 0o644, "server.key": 0o600, "signing.key": 0o600}
    assert sorted(os.listdir(gw.folder)) == sorted(pki.FILES)  # no temporary file left, no CA key


def test_modes_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        folder = pki.init(tmp_path / "a" / "gw").folder
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / pki.KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / pki.CA_FILE).stat().st_mode) == 0o644


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_fingerprint_is_openssls(gw: pki.Written) -> None:
    printed = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(gw.folder / pki.CA_FILE)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed.startswith("sha256 Fingerprint=") or printed.startswith("SHA256 Fingerprint=")
    assert pki.normalise_fingerprint(printed) == gw.fingerprint
    assert gw.fingerprint == pki.fingerprint((gw.folder / pki.CA_FILE).read_bytes())
    assert gw.fingerprint.startswith("sha256:") and len(gw.fingerprint) == len("sha256:") + 64


def test_normalise_fingerprint_spellings() -> None:
    hexa = "ab" * 32
    colons = ":".join(["AB"] * 32)
    for spelling in (f"sha256:{hexa}", hexa.upper(), colons, f"SHA256 Fingerprint={colons}\n"):
        assert pki.normalise_fingerprint(spelling) == f"sha256:{hexa}"
    with pytest.raises(ValueError, match="not a SHA-256 fingerprint"):
        pki.normalise_fingerprint("sha256:abc")


def test_the_signing_key_mints_tokens_that_verify(gw: pki.Written) -> None:
    key = tokens.load_signing_key(gw.folder / pki.SIGNING_KEY_FILE)
    now = time.time()
    token, claims = tokens.mint(
        key,
        sub="alice",
        audience="team-gw",
        env="staging",
        bindings={"CACHE": ["read"]},
        jkt="d",
        now=now,
        ttl_s=60,
    )
    verified = tokens.verify(
        token,
        audience="team-gw",
        env="staging",
        now=now,
        public_keys=tokens.keyring([key]),
        is_revoked=lambda _claims: False,
    )
    assert verified == claims


def test_no_file_is_overwritten_without_force(gw: pki.Written) -> None:
    before = {name: (gw.folder / name).read_bytes() for name in pki.FILES}
    with pytest.raises(pki.PkiError, match=r"already exist.*--force"):
        pki.init(gw.folder)
    assert {name: (gw.folder / name).read_bytes() for name in pki.FILES} == before


def test_one_file_there_is_enough_to_refuse(tmp_path: Path) -> None:
    folder = tmp_path / "gw"
    folder.mkdir()
    (folder / pki.SIGNING_KEY_FILE).write_text("the team's key")
    with pytest.raises(pki.PkiError, match=r"signing\.key already exists"):
        pki.init(folder)
    assert sorted(os.listdir(folder)) == [pki.SIGNING_KEY_FILE]
    assert (folder / pki.SIGNING_KEY_FILE).read_text() == "the team's key"


def test_force_replaces_every_file(gw: pki.Written) -> None:
    before = {name: (gw.folder / name).read_bytes() for name in pki.FILES}
    again = pki.init(gw.folder, force=True)
    assert again.fingerprint != gw.fingerprint
    assert all((gw.folder / name).read_bytes() != before[name] for name in pki.FILES)
    assert sorted(os.listdir(gw.folder)) == sorted(pki.FILES)


@pytest.mark.parametrize("host", ["", "gw.example.com:8443", "https://gw.example.com", "a b", "-x.example"])
def test_a_host_that_is_no_name_or_address_is_refused(host: str, tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match="neither a DNS name nor an IP address"):
        pki.init(tmp_path / "gw", [host])
    assert not (tmp_path / "gw").exists()


def test_hosts(tmp_path: Path) -> None:
    assert pki.parse_hosts(["GW.Example.com.", "::1", "[::1]", "localhost", "*.gw.example.com"]) == (
        "localhost",
        "127.0.0.1",
        "gw.example.com",
        "::1",
        "*.gw.example.com",
    )
