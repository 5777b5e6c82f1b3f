"""The laptop's device key: where it lives, its modes, refusing a key others can read, the CI
variable, and the signatures the gateway checks."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bindingd.errors import BindingdError, Reason
from bindingd.gateway import device
from bindingd.gateway.device import KEY_ENV, enrol_message, open_message, verify_signature
from bindingd.gateway.tokens import thumbprint


def pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(tmp_path / "config")}


def test_the_key_is_created_private_under_xdg_config_home(env: dict[str, str], tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        key = device.load_or_create("gw.example.com:8443", env)
    finally:
        os.umask(old)
    path = Path(key.source)
    assert path.parent == tmp_path / "config" / "bindingd"
    assert path.name.startswith("gateway-gw.example.com_8443-") and path.name.endswith(".key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    # The same key next time; another gateway gets its own.
    assert device.load_or_create("gw.example.com:8443", env).thumbprint == key.thumbprint
    assert device.load("gw.example.com:8443", env).thumbprint == key.thumbprint
    assert device.load_or_create("team-gw", env).thumbprint != key.thumbprint
    assert device.key_path("team-gw", env).name == "gateway-team-gw.key"


def test_default_folder_is_dot_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert device.config_dir({}) == tmp_path / ".config" / "bindingd"
    # A relative XDG_CONFIG_HOME is invalid (XDG spec) and ignored.
    assert device.config_dir({"XDG_CONFIG_HOME": "rel"}) == tmp_path / ".config" / "bindingd"


def test_file_names_are_sanitised_and_distinct(env: dict[str, str]) -> None:
    names = {
        device.key_path(g, env).name for g in ["gw:8443", "gw_8443", "../../etc/passwd", "a/b", "a_b", ""]
    }
    assert len(names) == 6
    for name in names:
        assert "/" not in name and not name.startswith("gateway-.")


def test_not_logged_in_means_no_key(env: dict[str, str]) -> None:
    assert device.load("team-gw", env) is None
    assert not device.forget("team-gw", env)


def test_forget_deletes_the_key(env: dict[str, str]) -> None:
    first = device.load_or_create("team-gw", env)
    assert device.forget("team-gw", env)
    assert device.load("team-gw", env) is None
    assert device.load_or_create("team-gw", env).thumbprint != first.thumbprint


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_others_can_read_is_refused(env: dict[str, str], mode: int) -> None:
    key = device.load_or_create("team-gw", env)
    os.chmod(key.source, mode)
    with pytest.raises(BindingdError) as info:
        device.load("team-gw", env)
    assert info.value.reason == Reason.NOT_LOGGED_IN
    assert f"{mode:04o}" in info.value.message and "chmod 600" in info.value.message
    # load_or_create does not quietly replace it either.
    with pytest.raises(BindingdError):
        device.load_or_create("team-gw", env)


def test_a_symlinked_key_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.key"
    target.write_bytes(pem(Ed25519PrivateKey.generate()))
    target.chmod(0o600)
    path = device.key_path("team-gw", env)
    path.parent.mkdir(parents=True)
    path.symlink_to(target)
    with pytest.raises(BindingdError, match="cannot read the device key"):
        device.load("team-gw", env)


def test_a_damaged_key_file(env: dict[str, str]) -> None:
    path = device.key_path("team-gw", env)
    path.parent.mkdir(parents=True)
    path.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n")
    path.chmod(0o600)
    with pytest.raises(BindingdError, match="not a PEM private key") as info:
        device.load("team-gw", env)
    assert "not a key" not in info.value.message


def test_the_ci_variable_holds_pem_text(env: dict[str, str]) -> None:
    private = Ed25519PrivateKey.generate()
    env[KEY_ENV] = pem(private).decode()
    key = device.load_or_create("team-gw", env)
    assert key.thumbprint == thumbprint(private.public_key()) and key.source == KEY_ENV
    assert not device.key_path("team-gw", env).exists()  # nothing written for CI


def test_the_ci_variable_names_a_file(env: dict[str, str], tmp_path: Path) -> None:
    private = Ed25519PrivateKey.generate()
    path = tmp_path / "ci.key"
    path.write_bytes(pem(private))
    path.chmod(0o600)
    env[KEY_ENV] = str(path)
    assert device.load("team-gw", env).thumbprint == thumbprint(private.public_key())
    path.chmod(0o644)
    with pytest.raises(BindingdError, match="chmod 600"):
        device.load("team-gw", env)
    env[KEY_ENV] = str(tmp_path / "missing.key")
    with pytest.raises(BindingdError, match=f"named by {KEY_ENV}"):
        device.load("team-gw", env)


def test_the_ci_variable_with_a_bad_or_other_key(env: dict[str, str]) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    env[KEY_ENV] = "-----BEGIN PRIVATE KEY-----\nsecret-looking-text\n-----END PRIVATE KEY-----\n"
    with pytest.raises(BindingdError) as info:
        device.load("team-gw", env)
    assert "secret-looking-text" not in info.value.message
    env[KEY_ENV] = pem(ec.generate_private_key(ec.SECP256R1())).decode()
    with pytest.raises(BindingdError, match="not an Ed25519 key"):
        device.load("team-gw", env)


def test_concurrent_first_logins_agree_on_one_key(env: dict[str, str]) -> None:
    seen: list[str] = []

    def create() -> None:
        seen.append(device.load_or_create("team-gw", env).thumbprint)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1
    assert len(list(device.config_dir(env).iterdir())) == 1


def test_signatures_bind_purpose_gateway_env_and_code(env: dict[str, str]) -> None:
    key = device.load_or_create("team-gw", env)
    proof = key.enrolment_proof("team-gw", "abcd-efgh")
    assert verify_signature(key.public_raw, proof, enrol_message("team-gw", "ABCDEFGH"))
    assert not verify_signature(key.public_raw, proof, enrol_message("other-gw", "ABCDEFGH"))
    assert not verify_signature(key.public_raw, proof, enrol_message("team-gw", "ABCDEFGI"))
    answer = key.sign_challenge("team-gw", "staging", "nonce")
    assert verify_signature(key.public_raw, answer, open_message("team-gw", "staging", "nonce"))
    assert not verify_signature(key.public_raw, answer, open_message("team-gw", "production", "nonce"))
    # An enrolment proof can never pass for a challenge answer, whatever the strings.
    assert enrol_message("g", "x") != open_message("g", "", "x")
    assert not verify_signature(b"short", answer, b"")
