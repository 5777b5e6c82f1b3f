"""`bindingd gateway init | grant | revoke` run as an admin runs them: the code grant prints
enrols a device, revoke shuts that device out, and mistakes are one line with exit code 2."""

from __future__ import annotations

import stat
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import bindingd_cli

from bindingd.cli.completion import candidates
from bindingd.errors import BindingdError, Reason
from bindingd.gateway.device import DeviceKey
from bindingd.gateway.sessions import Sessions
from bindingd.gateway.state import SqliteState
from bindingd.gateway.tokens import load_signing_key

GW = "team-gw"
GATEWAY_YAML = """\
    version: 1
    gateway:
      id: team-gw
      listen: "127.0.0.1:8443"
      tls: { cert: gw/server.pem, key: gw/server.key }
      signing_key: gw/signing.key
      state: { kind: sqlite, path: gw/state.sqlite3 }
    bindings:
      CACHE: { type: kv }
    envs:
      staging: {}
"""


def grants(user: str, groups: tuple[str, ...], env: str) -> dict[str, list[str]]:
    return {"CACHE": ["read"]}


@pytest.fixture
def team(tmp_path: Path) -> Path:
    """A folder after `bindingd gateway init gw`, with its gateway.yaml."""
    result = bindingd_cli("gateway", "init", "gw", "--host", "gw.example.com", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[-1].startswith("sha256:")
    assert "gw.example.com" in result.stdout
    (tmp_path / "gateway.yaml").write_text(textwrap.dedent(GATEWAY_YAML))
    return tmp_path


def one_line_error(result, code: int = 2) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bindingd: "), result.stderr
    assert "Traceback" not in result.stderr
    return str(lines[0])


async def test_grant_then_enrol_then_revoke(team: Path) -> None:
    granted = bindingd_cli(
        "gateway", "grant", "--config", "gateway.yaml", "--user", "alice", "--group", "dev", cwd=team
    )
    assert granted.returncode == 0, granted.stderr
    code = granted.stdout.splitlines()[-1]
    assert stat.S_IMODE((team / "gw" / "state.sqlite3").stat().st_mode) == 0o600

    store = SqliteState(team / "gw" / "state.sqlite3")
    await store.open()
    try:
        gw = Sessions(store, gateway_id=GW, signing_key=load_signing_key(team / "gw" / "signing.key"))
        key = DeviceKey(Ed25519PrivateKey.generate(), "test")
        device = await gw.enrol(code, key.public_raw, key.enrolment_proof(GW, code))
        assert (device.user, device.groups) == ("alice", ("dev",))
        nonce = gw.challenge()
        session = await gw.open(
            "staging", key.thumbprint, nonce, key.sign_challenge(GW, "staging", nonce), grants, 60
        )
        assert gw.verify(session.token, "staging").sub == "alice"

        revoked = bindingd_cli("gateway", "revoke", "--config", "gateway.yaml", "--user", "alice", cwd=team)
        assert revoked.returncode == 0, revoked.stderr
        assert "revoked user alice" in revoked.stdout and "1 device" in revoked.stdout

        nonce = gw.challenge()
        with pytest.raises(BindingdError) as info:
            await gw.open(
                "staging", key.thumbprint, nonce, key.sign_challenge(GW, "staging", nonce), grants, 60
            )
        assert info.value.reason == Reason.TOKEN_REVOKED
        await gw.revocations.refresh()
        with pytest.raises(BindingdError) as info:
            gw.verify(session.token, "staging")
        assert info.value.reason == Reason.TOKEN_REVOKED
    finally:
        await store.close()


def test_revoke_one_token(team: Path) -> None:
    result = bindingd_cli("gateway", "revoke", "--config", "gateway.yaml", "--token", "some-jti", cwd=team)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "revoked token some-jti"


def test_the_state_path_is_relative_to_the_yaml(team: Path) -> None:
    elsewhere = team / "elsewhere"
    elsewhere.mkdir()
    result = bindingd_cli("gateway", "grant", "--config", "../gateway.yaml", "--user", "bob", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert (team / "gw" / "state.sqlite3").exists() and not (elsewhere / "gw").exists()


def test_init_refuses_to_overwrite_then_forces(team: Path) -> None:
    before = (team / "gw" / "ca.pem").read_bytes()
    message = one_line_error(bindingd_cli("gateway", "init", "gw", cwd=team), code=1)
    assert "already exist" in message and "--force" in message
    assert (team / "gw" / "ca.pem").read_bytes() == before
    forced = bindingd_cli("gateway", "init", "gw", "--force", cwd=team)
    assert forced.returncode == 0, forced.stderr
    assert (team / "gw" / "ca.pem").read_bytes() != before


_GATEWAY = """\
version: 1
gateway:
  id: x
  listen: "127.0.0.1:1"
  tls: { cert: a.pem, key: a.key }
  signing_key: s.key
"""


@pytest.mark.parametrize(
    ("yaml", "expected"),
    [
        (None, "gateway config not found"),
        ("", "the file is empty"),
        ("version: 1\n", 'missing required key "gateway"'),
        ("version: 1\ngateway: {id: x}\n", 'gateway: missing required key "listen"'),
        (_GATEWAY + "  state: sqlite\n", "gateway.state: expected a mapping, got a string"),
        (_GATEWAY + "  state: { kind: oracle }\n", 'unknown state kind "oracle"'),
        ("gateway: [\n", "invalid YAML"),
    ],
)
def test_a_bad_gateway_yaml_is_one_line(tmp_path: Path, yaml: str | None, expected: str) -> None:
    if yaml is not None:
        (tmp_path / "gateway.yaml").write_text(yaml)
    for command in (["grant", "--user", "alice"], ["revoke", "--user", "alice"], ["serve"]):
        message = one_line_error(bindingd_cli("gateway", *command, "--config", "gateway.yaml", cwd=tmp_path))
        assert "gateway.yaml" in message and expected in message, message


@pytest.mark.parametrize(
    "args",
    [
        ["gateway", "grant", "--user", "alice"],  # no --config
        ["gateway", "serve"],  # no --config
        ["gateway", "grant", "--config", "gateway.yaml", "--user", ""],
        ["gateway", "revoke", "--config", "gateway.yaml", "--token", ""],
        ["gateway", "init", "gw2", "--host", "gw.example.com:8443"],
    ],
)
def test_bad_arguments_are_one_line(team: Path, args: list[str]) -> None:
    one_line_error(bindingd_cli(*args, cwd=team))
    assert not (team / "gw2").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["gateway"],
        ["gateway", "serve", "--config", "gateway.yaml", "--grace"],
        ["gateway", "revoke", "--config", "gateway.yaml"],
        ["gateway", "revoke", "--config", "gateway.yaml", "--user", "a", "--token", "j"],
        ["gateway", "grant", "--config", "gateway.yaml"],
    ],
)
def test_grammar_mistakes_are_usage_errors(team: Path, args: list[str]) -> None:
    """As for every command: argparse's usage, then one error line, exit 2."""
    result = bindingd_cli(*args, cwd=team)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("usage: bindingd gateway")
    assert result.stderr.splitlines()[-1].startswith("bindingd gateway")
    assert "Traceback" not in result.stderr


def test_completion_offers_the_gateway_commands_and_their_options(tmp_path: Path) -> None:
    assert candidates(["g"], tmp_path) == ["gateway"]
    assert candidates(["gateway", ""], tmp_path) == ["init", "serve", "grant", "revoke"]
    assert candidates(["gateway", "serve", "--"], tmp_path) == ["--help", "--config", "--grace"]
    assert candidates(["gateway", "init", "gw", "--"], tmp_path) == ["--help", "--host", "--force"]
    assert candidates(["gateway", "revoke", "--"], tmp_path) == ["--help", "--config", "--user", "--token"]


def test_gateway_serve_refuses_an_unknown_event_loop_before_opening_anything(tmp_path: Path) -> None:
    assert bindingd_cli("gateway", "init", "gw", cwd=tmp_path).returncode == 0
    (tmp_path / "gateway.yaml").write_text(textwrap.dedent(GATEWAY_YAML))
    before = sorted(p.name for p in (tmp_path / "gw").iterdir())
    result = bindingd_cli(
        "gateway", "serve", "--config", "gateway.yaml", cwd=tmp_path, env={"BINDINGD_EVENT_LOOP": "Trio"}
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "BINDINGD_EVENT_LOOP='Trio'" in lines[0] and "uvloop, asyncio" in lines[0]
    assert sorted(p.name for p in (tmp_path / "gw").iterdir()) == before  # no state, no audit log
