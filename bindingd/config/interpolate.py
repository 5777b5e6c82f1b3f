"""`${env:NAME}` and `${file:PATH}` references in config strings, and the dotenv files behind them.

Secrets stay out of bindingd.yaml: the file names where a value lives and this module fetches
it. Parsing (`parse`) is separate from resolving (`Resolver.render`) so that the loader can
check the syntax of every string in the file while only resolving the strings the selected env
uses: a staging variable missing on a laptop must not break `--env dev`.

Nothing here puts a resolved value in an exception message: errors quote the reference.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bindingd.config.errors import ConfigError
from bindingd.config.yaml_source import read_regular_file

SCHEMES = ("env", "file")
# Read for ${env:…} after the process environment, first match wins.
DOTENV_FILES = (".dev.vars", ".env")

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TemplateError(Exception):
    """A reference that is malformed or cannot be resolved; the loader adds file/line/key."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Ref:
    scheme: str
    arg: str
    text: str  # as written, e.g. "${env:API_KEY}", for messages


Part = str | Ref


def parse(text: str) -> list[Part]:
    """Split a string into literal parts and references. `$${` is a literal `${`."""
    parts: list[Part] = []
    literal: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            literal.append(text[i:])
            break
        literal.append(text[i:j])
        if text.startswith("$${", j):
            literal.append("${")
            i = j + 3
        elif text.startswith("${", j):
            end = text.find("}", j + 2)
            if end < 0:
                raise TemplateError(
                    'unterminated "${" (close the reference with "}", or write "$${" for a literal "${")'
                )
            ref = _ref(text[j : end + 1])
            parts.append("".join(literal))
            literal = []
            parts.append(ref)
            i = end + 1
        else:
            literal.append("$")
            i = j + 1
    parts.append("".join(literal))
    return [part for part in parts if part != ""]


def _ref(text: str) -> Ref:
    scheme, colon, arg = text[2:-1].partition(":")
    if not colon or scheme not in SCHEMES:
        raise TemplateError(
            f'unknown reference "{text}" (allowed: ${{env:NAME}}, ${{file:PATH}}; '
            'write "$${" for a literal "${")'
        )
    if scheme == "env" and not _VAR_NAME.fullmatch(arg):
        raise TemplateError(f'invalid variable name in "{text}" (expected letters, digits and _)')
    if scheme == "file" and not arg.strip():
        raise TemplateError(f'"{text}" names no file')
    return Ref(scheme, arg, text)


def has_refs(parts: list[Part]) -> bool:
    return any(isinstance(part, Ref) for part in parts)


def literal_text(parts: list[Part]) -> str:
    """The string of a template without references (escapes already undone)."""
    return "".join(part for part in parts if isinstance(part, str))


class Resolver:
    """Resolves references for one config file; reads each dotenv / referenced file once."""

    def __init__(self, environ: Mapping[str, str], root: Path) -> None:
        self._environ = environ
        self._root = root
        self._dotenv: dict[str, dict[str, str]] = {}
        self._files: dict[Path, str] = {}

    def render(self, parts: list[Part]) -> str:
        return "".join(part if isinstance(part, str) else self._resolve(part) for part in parts)

    def _resolve(self, ref: Ref) -> str:
        return self._env(ref) if ref.scheme == "env" else self._file(ref)

    def _env(self, ref: Ref) -> str:
        value = self._environ.get(ref.arg)
        if value is not None:
            return value
        for name in DOTENV_FILES:
            value = self._dotenv_file(name).get(ref.arg)
            if value is not None:
                return value
        raise TemplateError(
            f'environment variable "{ref.arg}" is not set '
            f"(looked in the process environment, {', '.join(DOTENV_FILES)})"
        )

    def _dotenv_file(self, name: str) -> dict[str, str]:
        if name not in self._dotenv:
            path = self._root / name
            try:
                text = read_regular_file(path)
            except FileNotFoundError:
                text = ""
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.reason if isinstance(exc, UnicodeDecodeError) else exc.strerror
                raise ConfigError(f"cannot read this file: {reason}", file=path) from exc
            self._dotenv[name] = parse_dotenv(text, path)
        return self._dotenv[name]

    def _file(self, ref: Ref) -> str:
        path = self._root / self._expand_home(ref.arg)
        if path not in self._files:
            try:
                text = read_regular_file(path)
            except UnicodeDecodeError as exc:
                raise TemplateError(f"cannot read {ref.text} ({path}): not UTF-8 text") from exc
            except OSError as exc:
                reason = "no such file" if isinstance(exc, FileNotFoundError) else exc.strerror
                raise TemplateError(f"cannot read {ref.text} ({path}): {reason}") from exc
            # Files written by editors and `echo` end in a newline that is not part of the value.
            if text.endswith("\r\n"):
                text = text[:-2]
            elif text.endswith("\n"):
                text = text[:-1]
            self._files[path] = text
        return self._files[path]

    def _expand_home(self, arg: str) -> Path:
        # `~` follows the given environ's HOME, so callers (and tests) control it.
        home = self._environ.get("HOME")
        if home and (arg == "~" or arg.startswith("~/")):
            return Path(home + arg[1:])
        return Path(arg).expanduser()


_DOTENV_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)", re.DOTALL)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def parse_dotenv(text: str, file: Path) -> dict[str, str]:
    """Parse `.env`-style text: KEY=VALUE lines, `export `, quotes, `#` comments, blank lines.

    Double-quoted values understand \\n, \\t, \\" and \\\\ and may span lines; single-quoted
    values are taken literally; an unquoted value ends at a ` #` comment. A later line wins.
    Errors name the file and line but never echo the line, which may hold a secret.
    """
    values: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number = i + 1
        line = lines[i].lstrip()
        i += 1
        if not line.strip() or line.startswith("#"):
            continue
        match = _DOTENV_LINE.fullmatch(line)
        if not match:
            raise ConfigError(
                "malformed line: expected KEY=VALUE (or a blank line, or a # comment)",
                file=file,
                line=number,
            )
        key, rest = match.group(1), match.group(2)
        if rest[:1] in ('"', "'"):
            quote, body = rest[0], rest[1:]
            end = _closing_quote(body, quote)
            while end < 0:  # a quoted value may continue on the next lines
                if i >= len(lines):
                    raise ConfigError(f"unterminated {quote} quote", file=file, line=number)
                body += "\n" + lines[i]
                i += 1
                end = _closing_quote(body, quote)
            after = body[end + 1 :].strip()
            if after and not after.startswith("#"):
                raise ConfigError(
                    "unexpected text after the closing quote (put a # before a comment)",
                    file=file,
                    line=number,
                )
            value = body[:end]
            if quote == '"':
                value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), value)
        else:
            value = re.split(r"\s#", rest, maxsplit=1)[0].rstrip()
        values[key] = value
    return values


def _closing_quote(body: str, quote: str) -> int:
    if quote == "'":
        return body.find("'")
    i = 0
    while i < len(body):
        if body[i] == "\\":
            i += 2
            continue
        if body[i] == '"':
            return i
        i += 1
    return -1
