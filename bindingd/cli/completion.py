"""Shell completion: `bindingd completion bash|zsh|fish` prints a script to source.

The scripts are thin: at every TAB they run `bindingd __complete WORD...` (the words after
`bindingd`, the one being completed last) and offer what it prints, one candidate a line. All the
logic is here, read from the same argparse tree as the commands (`bindingd.cli.parser`), so the
three shells complete alike and a new option needs no script change. The binding names, env
names and a binding's operations come from the project's bindingd.yaml, read as plain YAML:
completion must answer at once, without a daemon, even for a config that does not load yet.

A last line `:files` asks the shell for its own file-name completion (`--config`, `run -- CMD`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bindingd.cli.parser import build_parser

FILES = ":files"
SHELLS = ("bash", "zsh", "fish")
CONFIG_FILE = "bindingd.yaml"

# What `bindingd call NAME` offers after a binding of each type (the names `bindingd call` takes).
OPERATIONS: dict[str, tuple[str, ...]] = {
    "kv": ("get", "get-with-metadata", "put", "delete", "list"),
    "objects": ("head", "get", "put", "delete", "list"),
    "sql": ("query", "exec"),
    "queue": ("send", "send-batch", "consume"),
    "var": ("get",),
    "secret": ("get",),
}
# Options whose value names a file or folder: the shell completes those itself.
_PATH_OPTIONS = frozenset({"--config", "--socket"})


def complete(words: Sequence[str]) -> int:
    """`bindingd __complete WORD...`: print the candidates for the last word. Never fails loudly:
    a TAB that finds nothing offers nothing."""
    try:
        for candidate in candidates(list(words), Path.cwd()):
            print(candidate)
    except Exception:  # a broken config or an odd line must not spill a traceback into the prompt
        return 0
    return 0


def candidates(words: list[str], cwd: Path) -> list[str]:
    """What may come in place of `words[-1]` (possibly ""), the words before it being given."""
    *before, current = words or [""]
    parser = build_parser()
    commands = _subcommands(parser)
    value_options = _value_options(parser)
    # bash splits `--config=F` into `--config`, `=`, `F` (COMP_WORDBREAKS): read it as `--config F`
    # (bash then replaces only the part after the `=`, which is what is offered).
    before = [w for n, w in enumerate(before) if not (w == "=" and n and before[n - 1] in value_options)]
    if current == "=" and before and before[-1] in value_options:
        current = ""  # the cursor just after `--env=`

    command: str | None = None
    positional: list[str] = []
    config: str | None = None
    env: str | None = None
    after_dashes = False
    i = 0
    while i < len(before):
        word = before[i]
        if after_dashes:
            positional.append(word)
        elif word == "--":
            after_dashes = True
        elif word.startswith("-") and word != "-":
            name, eq, value = word.partition("=")
            if not eq and name in value_options:
                value = before[i + 1] if i + 1 < len(before) else ""
                i += 1
            if name == "--config":
                config = value
            elif name == "--env":
                env = value
        elif command is None:
            command = word
        else:
            positional.append(word)
        i += 1

    project = _Project(cwd, config, env)
    previous = before[-1] if before and not after_dashes else None
    if previous in value_options and "=" not in previous:
        return _option_value(parser, commands, command, previous, current, project)
    if after_dashes:
        return [FILES]
    if current.startswith("-") and current != "-":
        where = commands.get(command, parser) if command else parser
        # A command group (`gateway grant --`): the options of the subcommand named first.
        where = _subcommands(where).get(positional[0], where) if positional else where
        options = _options(where)
        return [o for o in options if o.startswith(current)]
    if command is None:
        return _starting(current, list(commands))
    return _starting(current, _positional(command, positional, project))


def _positional(command: str, positional: list[str], project: _Project) -> list[str]:
    if command == "call":
        if not positional:
            return project.bindings()
        if len(positional) == 1:
            return list(OPERATIONS.get(project.binding_type(positional[0]) or "", ()))
        return [FILES]  # a query's `-`, an object's file: the shell knows files
    if command == "migrations":
        if not positional:
            return ["create", "list", "apply"]
        if len(positional) == 1:
            return project.bindings(of_type="sql")
        return []
    if command == "gateway" and not positional:
        return list(_subcommands(_subcommands(build_parser())["gateway"]))  # init, grant, revoke
    if command == "completion" and not positional:
        return list(SHELLS)
    return []


def _option_value(
    parser: argparse.ArgumentParser,
    commands: dict[str, argparse.ArgumentParser],
    command: str | None,
    option: str,
    current: str,
    project: _Project,
) -> list[str]:
    if option == "--env":
        return _starting(current, project.envs())
    if option in _PATH_OPTIONS:
        return [FILES]
    where = commands.get(command, parser) if command else parser
    for action in where._actions:
        if option in action.option_strings and action.choices:
            return _starting(current, [str(c) for c in action.choices])
    return []


def _starting(prefix: str, words: list[str]) -> list[str]:
    return [w for w in words if w.startswith(prefix)]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [
        o
        for a in parser._actions
        if a.help != argparse.SUPPRESS
        for o in a.option_strings
        if o.startswith("--")
    ]


def _value_options(parser: argparse.ArgumentParser) -> frozenset[str]:
    """Every option that takes a value, in any command: its value is not a positional word."""
    names: set[str] = set()
    for p in [parser, *_subcommands(parser).values()]:
        for a in p._actions:
            if a.option_strings and a.nargs != 0:
                names.update(a.option_strings)
    return frozenset(names)


class _Project:
    """The names a completion may offer, read from the project's bindingd.yaml as plain YAML."""

    def __init__(self, cwd: Path, config: str | None, env: str | None) -> None:
        # `~/x` arrives unexpanded: the shell expands it only when the line runs.
        self.path = Path(config).expanduser() if config else _find(cwd)
        self.env = env or os.environ.get("BINDINGD_ENV")
        self._data: dict[str, Any] | None = None

    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = {}
            if self.path is not None and self.path.is_file():
                import yaml

                try:
                    loaded = yaml.safe_load(self.path.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, yaml.YAMLError):
                    loaded = None  # a file being edited: offer no names rather than fail
                if isinstance(loaded, dict):
                    self._data = loaded
        return self._data

    def envs(self) -> list[str]:
        data = self.data()
        envs = data.get("envs")
        names = {str(e) for e in envs} if isinstance(envs, dict) else set()
        if isinstance(data.get("env"), str):
            names.add(data["env"])  # the file's default env, which needs no envs: entry
        return sorted(names)

    def _bindings(self) -> dict[str, Any]:
        """The file's bindings, with those the env adds or overrides (every env's, when none is
        chosen: a name that exists somewhere is worth offering)."""
        data = self.data()
        found: dict[str, Any] = {}
        top = data.get("bindings")
        if isinstance(top, dict):
            found.update(top)
        envs = data.get("envs")
        chosen = self.env or data.get("env")
        if isinstance(envs, dict):
            for name, body in envs.items():
                extra = body.get("bindings") if isinstance(body, dict) else None
                if isinstance(extra, dict) and (chosen is None or name == chosen):
                    for key, value in extra.items():
                        merged = dict(found.get(key) or {}) if isinstance(found.get(key), dict) else {}
                        if isinstance(value, dict):
                            merged.update(value)
                        found[key] = merged
        return found

    def bindings(self, of_type: str | None = None) -> list[str]:
        return sorted(
            str(name)
            for name, body in self._bindings().items()
            if of_type is None or (isinstance(body, dict) and body.get("type") == of_type)
        )

    def binding_type(self, name: str) -> str | None:
        body = self._bindings().get(name)
        return body.get("type") if isinstance(body, dict) else None


def _find(cwd: Path) -> Path | None:
    for folder in (cwd, *cwd.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE
    return None


# --- the scripts -------------------------------------------------------------------------------

_BASH = r"""# bindingd completion for bash: source it from ~/.bashrc, e.g.
#   source <(bindingd completion bash)
_bindingd_complete() {
    local IFS=$'\n'
    local -a out
    out=($(bindingd __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
    if (( ${#out[@]} )) && [[ "${out[${#out[@]}-1]}" == ":files" ]]; then
        unset 'out[${#out[@]}-1]'
        compopt -o default 2>/dev/null
    fi
    COMPREPLY=("${out[@]}")
}
complete -F _bindingd_complete bindingd
"""

_ZSH = r"""#compdef bindingd
# bindingd completion for zsh: put it in a folder of $fpath as _bindingd, or after compinit:
#   source <(bindingd completion zsh)
_bindingd() {
    local -a out
    out=("${(@f)$(bindingd __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    out=(${out:#})
    if (( ${#out} )) && [[ "${out[-1]}" == ":files" ]]; then
        out[-1]=()
        _files
    fi
    (( ${#out} )) && compadd -- "${out[@]}"
    return 0
}
if [[ "${funcstack[1]}" == "_bindingd" ]]; then
    _bindingd "$@"
else
    compdef _bindingd bindingd
fi
"""

_FISH = r"""# bindingd completion for fish: save it as ~/.config/fish/completions/bindingd.fish, or
#   bindingd completion fish | source
function __bindingd_complete
    set -l words (commandline -opc) (commandline -ct)
    set -e words[1]
    set -l out (bindingd __complete $words 2>/dev/null)
    if test (count $out) -gt 0; and test "$out[-1]" = ":files"
        set -e out[-1]
        __fish_complete_path (commandline -ct)
    end
    printf '%s\n' $out
end
complete -c bindingd -f -a '(__bindingd_complete)'
"""

SCRIPTS = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}


def print_script(shell: str) -> int:
    sys.stdout.write(SCRIPTS[shell])
    return 0
