"""The command line at a terminal (issue 18): tables and colour on a TTY, plain text in a pipe,
`bindings` with reasons and for any env, and shell completion in bash, zsh and fish."""

from __future__ import annotations

import json
import os
import pty
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import DaemonProcess, bindingd_cli, write_project

from bindingd.cli import style
from bindingd.cli.completion import FILES, candidates

CONFIG = """
    version: 1
    env: dev
    connections:
      nowhere: { kind: redis, url: "redis://127.0.0.1:{port}/0", timeout: 1 }
    bindings:
      CACHE:  { type: kv }
      APP_DB: { type: sql }
      JOBS:   { type: queue }
      SITE_NAME: { type: var, value: "Example Shop" }
    envs:
      production:
        protected: true
      review:
        bindings:
          REVIEW_CACHE: { type: kv, connection: nowhere }
"""
ANSI = "\x1b["
BIN = Path(sys.executable).parent


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path, CONFIG.replace("{port}", str(_closed_port())))
    return tmp_path


def _in_terminal(project: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`bindingd ARGS` with stdout and stderr on a pseudo-terminal, as a person runs it."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bindingd", *args],
        cwd=project,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm", **(env or {})},
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    return proc.wait(timeout=60), output.decode().replace("\r\n", "\n")


def _without_colour_env() -> dict[str, str]:
    return {"NO_COLOR": "1"}


def test_a_query_on_a_terminal_is_a_table_and_json_in_a_pipe(project: Path) -> None:
    setup = "CREATE TABLE t (id INTEGER, name TEXT, note TEXT, b BLOB); "
    setup += "INSERT INTO t VALUES (1, 'mug', NULL, x'00ff');"
    assert bindingd_cli("call", "APP_DB", "exec", setup, cwd=project).returncode == 0
    query = "SELECT id, name, note, b FROM t"

    code, shown = _in_terminal(project, "call", "APP_DB", "query", query, env=_without_colour_env())
    assert code == 0, shown
    lines = shown.strip().splitlines()
    assert lines[0].startswith("┌") and lines[-2].startswith("└"), shown
    assert [c.strip() for c in lines[1].strip("│").split("│")] == ["id", "name", "note", "b"]
    assert [c.strip() for c in lines[3].strip("│").split("│")] == ["1", "mug", "NULL", "x'00ff'"]
    assert lines[-1] == "1 row" and ANSI not in shown

    # No columns (a write through query): said, not an empty box.
    code, shown = _in_terminal(project, "call", "APP_DB", "query", "UPDATE t SET name = 'cup'")
    assert code == 0 and "no rows" in shown and "┌" not in shown

    # --json on a terminal, and a pipe, keep the JSON programs read.
    code, shown = _in_terminal(project, "call", "APP_DB", "query", query, "--json")
    assert code == 0 and json.loads(shown)["results"][0]["name"] == "cup"
    piped = bindingd_cli("call", "APP_DB", "query", query, cwd=project)
    assert piped.returncode == 0 and json.loads(piped.stdout)["results"][0]["b"] == {"blob_hex": "00ff"}


def test_a_query_table_escapes_control_characters_and_lines_up_wide_characters(project: Path) -> None:
    # A value or column name from a database must not reach the terminal as an escape sequence
    # (here: retitle the window, clear the screen, a C1 CSI).
    query = (
        "SELECT char(27) || ']0;pwned' || char(7) AS t, 'a' || char(155) || '2J\\n' AS b,"
        " '漢字' AS \"w\x1b[31m\""
        " UNION ALL SELECT 'x', 'y', 'abcd'"
    )
    code, shown = _in_terminal(project, "call", "APP_DB", "query", query, env=_without_colour_env())
    assert code == 0, shown
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown, repr(shown)
    lines = shown.strip().splitlines()
    assert lines[1].split("│")[3].strip() == "w\\x1b[31m"
    assert lines[3].split("│")[1:3] == [" \\x1b]0;pwned\\x07 ", " a\\x9b2J\\\\n "]
    # A database's error message quoting the statement: one line, escaped too.
    code, shown = _in_terminal(project, "call", "APP_DB", "query", 'SELECT * FROM "\x1b]0;x\x07"')
    assert code == 1 and "\x1b" not in shown and "no such table: \\x1b]0;x\\x07" in shown, repr(shown)
    # East Asian wide characters take two columns: every line of the box is as wide.
    widths = {style.width(line) for line in lines[:-1]}
    assert len(widths) == 1, lines


def test_colour_on_a_terminal_only_and_never_with_no_color(project: Path) -> None:
    code, shown = _in_terminal(project, "check")
    assert code == 0 and f"{ANSI}32m" in shown  # "ok" in green
    code, shown = _in_terminal(project, "check", env={"NO_COLOR": "1"})
    assert code == 0 and ANSI not in shown and "ok" in shown
    code, shown = _in_terminal(project, "check", env={"TERM": "dumb"})
    assert code == 0 and ANSI not in shown
    piped = bindingd_cli("check", cwd=project)
    assert piped.returncode == 0 and ANSI not in piped.stdout

    code, shown = _in_terminal(project, "bindings", "--env", "review")
    assert code == 0 and f"{ANSI}31mnot_serving" in shown and f"{ANSI}32mserving" in shown


def test_bindings_give_the_reason_and_answer_for_another_env_than_the_daemons(project: Path) -> None:
    daemon = DaemonProcess(project).start()
    try:
        # The dev daemon answers for dev...
        dev = bindingd_cli("bindings", "--json", cwd=project)
        assert dev.returncode == 0, dev.stderr
        assert {r["binding"]: r["env"] for r in json.loads(dev.stdout)}["CACHE"] == "dev"
        assert "probed" not in dev.stderr
        # ...and review, which it does not serve, is probed directly instead of "no daemon".
        review = bindingd_cli("bindings", "--env", "review", "--json", cwd=project)
        assert review.returncode == 0, review.stderr
        rows = {r["binding"]: r for r in json.loads(review.stdout)}
        assert rows["CACHE"]["env"] == "review" and rows["CACHE"]["health"] == "serving"
        assert rows["CACHE"]["reason"] == ""
        assert rows["REVIEW_CACHE"]["health"] == "not_serving"
        assert "cannot reach redis at 127.0.0.1:" in rows["REVIEW_CACHE"]["reason"]
        code, shown = _in_terminal(project, "bindings", "--env", "review")
        assert code == 0 and 'no daemon serves env "review" here' in shown
        table = bindingd_cli("bindings", "--env", "review", cwd=project)
        assert table.stdout.splitlines()[0].split()[-1] == "REASON"
        assert "cannot reach redis" in next(
            line for line in table.stdout.splitlines() if "REVIEW_CACHE" in line
        )
    finally:
        daemon.stop()


def test_bindings_of_a_daemon_say_why_one_is_not_serving(project: Path) -> None:
    daemon = DaemonProcess(project, "--env", "review").start()
    try:
        listed = bindingd_cli("bindings", "--env", "review", "--json", cwd=project)
        assert listed.returncode == 0, listed.stderr
        assert "probed" not in listed.stderr  # the daemon answered
        rows = {r["binding"]: r for r in json.loads(listed.stdout)}
        assert rows["REVIEW_CACHE"]["health"] in ("not_serving", "unknown")
        if rows["REVIEW_CACHE"]["health"] == "not_serving":
            assert "cannot reach redis" in rows["REVIEW_CACHE"]["reason"]
        assert rows["CACHE"]["reason"] == ""
    finally:
        daemon.stop()


# --- completion ------------------------------------------------------------------------------


def test_completion_offers_commands_options_envs_bindings_and_operations(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offered(line: str) -> list[str]:
        words = line.split(" ")
        return candidates(words, project)

    assert "call" in offered("") and "completion" in offered("c") and "serve" not in offered("c")
    # The bindings of the env the command would use: the file's default (dev) unless --env says.
    assert offered("call ") == ["APP_DB", "CACHE", "JOBS", "SITE_NAME"]
    assert offered("call --env review REV") == ["REVIEW_CACHE"]
    assert offered("--env review call ") == ["APP_DB", "CACHE", "JOBS", "REVIEW_CACHE", "SITE_NAME"]
    assert offered("call CACHE ") == ["get", "get-with-metadata", "put", "delete", "list"]
    assert offered("call APP_DB q") == ["query"]
    assert offered("call APP_DB query ") == [FILES]
    assert offered("call NOPE ") == []
    assert offered("--env ") == ["dev", "production", "review"]
    assert offered("check --env r") == ["review"]
    assert offered("migrations apply ") == ["APP_DB"]
    assert offered("--log-level w") == ["warning"]
    assert offered("--config ") == [FILES]
    assert offered("run -- ") == [FILES]
    assert "--allow-writes" in offered("serve --a") and "--json" in offered("bindings --")
    assert offered("completion ") == ["bash", "zsh", "fish"]
    # Another project's config, named on the line.
    other = project / "other"
    write_project(other, "version: 1\nbindings:\n  OTHER: { type: kv }\n")
    assert offered(f"--config {other / 'bindingd.yaml'} call ") == ["OTHER"]
    # bash hands `--config=F` over as `--config`, `=`, `F`, and `--env=` as `--env`, `=`.
    assert offered(f"--config = {other / 'bindingd.yaml'} call ") == ["OTHER"]
    assert offered("call --env = r") == ["review"] and offered("--env =") == ["dev", "production", "review"]
    assert offered("--config =") == [FILES]
    # A `~` the shell has not expanded yet.
    monkeypatch.setenv("HOME", str(project))
    assert offered("--config ~/other/bindingd.yaml call ") == ["OTHER"]
    # A config that does not parse offers nothing, and says nothing.
    (project / "bindingd.yaml").write_text("bindings: [unclosed\n")
    assert offered("call ") == []
    done = bindingd_cli("__complete", "call", "", cwd=project)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run installs it")
        pytest.skip(f"{name} is not installed")
    return path


def _completion_env() -> dict[str, str]:
    # The scripts run `bindingd` from PATH, as they do in a user's shell.
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def _script(shell: str, project: Path) -> Path:
    made = bindingd_cli("completion", shell, cwd=project)
    assert made.returncode == 0, made.stderr
    path = project / f"completion.{shell}"
    path.write_text(made.stdout)
    return path


def test_bash_completion(project: Path) -> None:
    bash = _shell("bash")
    script = _script("bash", project)
    show = '_bindingd_complete; printf "%s\\n" "${COMPREPLY[@]}"'
    run = (
        f"source {script}; "
        f'COMP_WORDS=(bindingd call ""); COMP_CWORD=2; {show}; echo --; '
        f'COMP_WORDS=(bindingd call APP_DB ""); COMP_CWORD=3; {show}; echo --; '
        'COMP_WORDS=(bindingd run -- ""); COMP_CWORD=3; _bindingd_complete; echo "${#COMPREPLY[@]}"; '
        "complete -p bindingd"
    )
    done = subprocess.run(
        [bash, "-c", run], cwd=project, env=_completion_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    bindings, ops, files = done.stdout.split("--\n")
    assert bindings.split() == ["APP_DB", "CACHE", "JOBS", "SITE_NAME"]
    assert ops.split() == ["query", "exec"]
    lines = files.splitlines()
    assert lines[0] == "0"  # nothing of ours: bash's own file names (compopt -o default)
    assert "_bindingd_complete" in lines[1]


def test_zsh_completion(project: Path) -> None:
    zsh = _shell("zsh")
    script = _script("zsh", project)
    # compadd and _files exist only inside a completion widget: stand-ins print what they get.
    run = (
        "autoload -U compinit && compinit -u -D; "
        f"source {script}; "
        'print -r -- "registered: $_comps[bindingd]"; '
        "compadd() { [[ $1 == -- ]] && shift; print -l -- $@; }; _files() { print FILES; }; "
        'words=(bindingd call ""); CURRENT=3; _bindingd; print -- --; '
        "words=(bindingd call CACHE g); CURRENT=4; _bindingd; print -- --; "
        'words=(bindingd --config ""); CURRENT=3; _bindingd'
    )
    done = subprocess.run(
        [zsh, "-f", "-c", run], cwd=project, env=_completion_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    bindings, ops, files = done.stdout.split("--\n")
    assert bindings.splitlines()[0] == "registered: _bindingd"
    assert bindings.splitlines()[1:] == ["APP_DB", "CACHE", "JOBS", "SITE_NAME"]
    assert ops.split() == ["get", "get-with-metadata"]
    assert files.split() == ["FILES"]


def test_fish_completion(project: Path) -> None:
    fish = _shell("fish")
    script = _script("fish", project)
    run = (
        f"source {script}; "
        "complete -C 'bindingd call '; echo ==; "
        "complete -C 'bindingd call JOBS s'; echo ==; "
        "complete -C 'bindingd --env '; echo ==; "
        "complete -C 'bindingd --config bindingd.y'"
    )
    done = subprocess.run(
        [fish, "--no-config", "-c", run], cwd=project, env=_completion_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    bindings, ops, envs, files = done.stdout.split("==\n")
    assert [line.split("\t")[0] for line in bindings.splitlines()] == [
        "APP_DB",
        "CACHE",
        "JOBS",
        "SITE_NAME",
    ]
    assert [line.split("\t")[0] for line in ops.splitlines()] == ["send", "send-batch"]
    assert [line.split("\t")[0] for line in envs.splitlines()] == ["dev", "production", "review"]
    assert [line.split("\t")[0] for line in files.splitlines()] == ["bindingd.yaml"]
