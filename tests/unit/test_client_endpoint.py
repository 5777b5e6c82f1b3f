"""Endpoint and token discovery: arguments, environment variables, then .bindingd/ walking up."""

from __future__ import annotations

import pytest
from bindingd_client import DaemonUnavailable
from bindingd_client._transport import resolve_endpoint
from bindingd_client.wire import normalize_endpoint


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("BINDINGD_ENDPOINT", raising=False)
    monkeypatch.delenv("BINDINGD_TOKEN", raising=False)


def write_state(directory, endpoint=None, token=None):
    state = directory / ".bindingd"
    state.mkdir(parents=True, exist_ok=True)
    if endpoint is not None:
        (state / "endpoint").write_text(endpoint + "\n")
    if token is not None:
        (state / "token").write_text(token + "\n")
    return state


@pytest.mark.parametrize(
    ("endpoint", "target", "tcp"),
    [
        ("unix:///abs/path/bindingd.sock", "unix:///abs/path/bindingd.sock", False),
        ("unix:/abs/path/bindingd.sock", "unix:///abs/path/bindingd.sock", False),
        ("/abs/path/bindingd.sock", "unix:///abs/path/bindingd.sock", False),
        ("127.0.0.1:7000", "127.0.0.1:7000", True),
        ("localhost:7000", "localhost:7000", True),
        ("[::1]:7000", "[::1]:7000", True),
        ("tcp://127.0.0.1:7000", "127.0.0.1:7000", True),
        ("  unix:///x.sock \n", "unix:///x.sock", False),
    ],
)
def test_endpoint_forms(endpoint, target, tcp):
    assert normalize_endpoint(endpoint) == (target, tcp)


@pytest.mark.parametrize("endpoint", ["bindingd.sock", "host:", "host:port", ":7000"])
def test_invalid_endpoint(endpoint):
    with pytest.raises(DaemonUnavailable, match="not valid"):
        normalize_endpoint(endpoint)


def test_arguments_win_over_env_and_files(tmp_path, monkeypatch):
    write_state(tmp_path, endpoint="127.0.0.1:1", token="file-token")
    monkeypatch.setenv("BINDINGD_ENDPOINT", "127.0.0.1:2")
    monkeypatch.setenv("BINDINGD_TOKEN", "env-token")
    assert resolve_endpoint("127.0.0.1:3", "arg-token", cwd=tmp_path) == ("127.0.0.1:3", "arg-token")


def test_env_vars_win_over_files(tmp_path, monkeypatch):
    write_state(tmp_path, endpoint="127.0.0.1:1", token="file-token")
    monkeypatch.setenv("BINDINGD_ENDPOINT", "127.0.0.1:2")
    monkeypatch.setenv("BINDINGD_TOKEN", "env-token")
    assert resolve_endpoint(cwd=tmp_path) == ("127.0.0.1:2", "env-token")


def test_empty_env_var_counts_as_unset(tmp_path, monkeypatch):
    write_state(tmp_path, endpoint="unix:///from/file.sock")
    monkeypatch.setenv("BINDINGD_ENDPOINT", "")
    assert resolve_endpoint(cwd=tmp_path) == ("unix:///from/file.sock", None)


def test_walks_up_from_a_nested_directory(tmp_path):
    sock = tmp_path / ".bindingd" / "bindingd.sock"
    write_state(tmp_path, endpoint=f"unix://{sock}")
    nested = tmp_path / "src" / "app" / "handlers"
    nested.mkdir(parents=True)
    assert resolve_endpoint(cwd=nested) == (f"unix://{sock}", None)


def test_nearest_endpoint_file_wins(tmp_path):
    write_state(tmp_path, endpoint="unix:///outer.sock")
    inner = tmp_path / "inner"
    write_state(inner, endpoint="unix:///inner.sock")
    (inner / "deeper").mkdir()
    assert resolve_endpoint(cwd=inner / "deeper")[0] == "unix:///inner.sock"


def test_defaults_to_the_working_directory(tmp_path, monkeypatch):
    write_state(tmp_path, endpoint="/here.sock")
    monkeypatch.chdir(tmp_path)
    assert resolve_endpoint() == ("unix:///here.sock", None)


def test_tcp_token_from_the_file_beside_the_endpoint(tmp_path):
    write_state(tmp_path, endpoint="127.0.0.1:7000", token="s3cret")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert resolve_endpoint(cwd=nested) == ("127.0.0.1:7000", "s3cret")


def test_tcp_endpoint_from_env_gets_the_project_token_where_the_daemon_listens(tmp_path, monkeypatch):
    state = write_state(tmp_path, token="walked")
    (state / "listen").write_text("127.0.0.1:7000\n")
    nested = tmp_path / "a"
    nested.mkdir()
    monkeypatch.setenv("BINDINGD_ENDPOINT", "127.0.0.1:7000")
    assert resolve_endpoint(cwd=nested) == ("127.0.0.1:7000", "walked")
    # Anywhere else, the project's token stays home.
    monkeypatch.setenv("BINDINGD_ENDPOINT", "127.0.0.1:7001")
    assert resolve_endpoint(cwd=nested) == ("127.0.0.1:7001", None)
    (state / "listen").unlink()
    monkeypatch.setenv("BINDINGD_ENDPOINT", "127.0.0.1:7000")
    assert resolve_endpoint(cwd=nested) == ("127.0.0.1:7000", None)


def test_an_explicit_token_never_goes_to_a_found_endpoint(tmp_path, monkeypatch):
    write_state(tmp_path, endpoint="127.0.0.1:7000")
    monkeypatch.setenv("BINDINGD_TOKEN", "env")
    assert resolve_endpoint(cwd=tmp_path) == ("127.0.0.1:7000", None)


@pytest.mark.parametrize("blank", ["", "   ", "\n\t "])
def test_a_blank_token_is_never_sent(tmp_path, monkeypatch, blank):
    write_state(tmp_path, endpoint="127.0.0.1:7000", token=blank)
    assert resolve_endpoint(cwd=tmp_path) == ("127.0.0.1:7000", None)
    monkeypatch.setenv("BINDINGD_TOKEN", blank)
    assert resolve_endpoint("127.0.0.1:7000", blank, cwd=tmp_path) == ("127.0.0.1:7000", None)


def test_tcp_token_env_beats_the_token_file(tmp_path, monkeypatch):
    state = write_state(tmp_path, token="file")
    (state / "listen").write_text("127.0.0.1:7000\n")
    monkeypatch.setenv("BINDINGD_ENDPOINT", "127.0.0.1:7000")
    monkeypatch.setenv("BINDINGD_TOKEN", "env")
    assert resolve_endpoint(cwd=tmp_path) == ("127.0.0.1:7000", "env")


def test_tcp_without_any_token(tmp_path):
    assert resolve_endpoint("127.0.0.1:7000", cwd=tmp_path) == ("127.0.0.1:7000", None)


def test_unix_endpoints_never_carry_a_token(tmp_path, monkeypatch):
    write_state(tmp_path, endpoint="unix:///x.sock", token="file")
    monkeypatch.setenv("BINDINGD_TOKEN", "env")
    assert resolve_endpoint(cwd=tmp_path) == ("unix:///x.sock", None)
    assert resolve_endpoint("/y.sock", "arg", cwd=tmp_path) == ("unix:///y.sock", None)


def test_nothing_found_is_daemon_unavailable(tmp_path):
    with pytest.raises(DaemonUnavailable) as info:
        resolve_endpoint(cwd=tmp_path)
    message = str(info.value)
    assert "BINDINGD_ENDPOINT" in message
    assert str(tmp_path) in message
    assert '"bindingd serve"' in message and '"bindingd run -- ..."' in message
    assert info.value.reason == "DAEMON_UNAVAILABLE"


def test_empty_endpoint_file_is_daemon_unavailable(tmp_path):
    write_state(tmp_path, endpoint="")
    with pytest.raises(DaemonUnavailable, match="is empty"):
        resolve_endpoint(cwd=tmp_path)


def test_a_directory_named_endpoint_is_not_an_endpoint_file(tmp_path):
    (tmp_path / ".bindingd" / "endpoint").mkdir(parents=True)
    with pytest.raises(DaemonUnavailable, match="no bindingd daemon found"):
        resolve_endpoint(cwd=tmp_path)
