"""Connection URLs and DSNs: checked when the config loads, and shown without credentials.

A password with an unencoded `/`, `#`, `?` or `@` breaks a URL apart: `urlsplit` then takes the
password's first part for the port (and the rest for the path, query or fragment), and every
driver's "invalid port" error, every "cannot reach HOST:PORT" message and every traceback
quotes a piece of the secret. So the loader checks each connection URL once it is resolved
(the secret only exists after `${env:…}` / `${file:…}`), and refuses a malformed one with a
message that says what is wrong without quoting any of it. `address` is what providers print:
scheme-free `host:port`, and a placeholder for a URL that does not pass the same check.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from bindingd.config.model import Connection

_ENCODE = "a password with '/', '#', '?' or '@' must be percent-encoded (%2F, %23, %3F, %40)"
# Printed in place of an address that cannot be shown safely.
UNKNOWN_ADDRESS = "(an invalid URL)"


@dataclass(frozen=True)
class UrlRule:
    option: str  # the connection option that holds the URL
    schemes: tuple[str, ...]
    # Query parameters that name a unix socket instead of a host (the host may then be left out).
    socket_params: tuple[str, ...] = ()
    # Schemes whose URL is a socket path, with no host at all.
    path_schemes: tuple[str, ...] = ()
    # What the driver connects to when the URL leaves the host or the port out.
    default_host: str = "localhost"
    default_port: int = 0
    # For a database server, the address names the database too (host:port/db); this is shown
    # after host:port when the URL names none. None: the address is host:port only.
    no_database: str | None = None


# By connection kind; the schemes are those each provider's driver accepts.
RULES: dict[str, UrlRule] = {
    "postgres": UrlRule(
        "dsn", ("postgres", "postgresql"), socket_params=("host",), default_port=5432, no_database=""
    ),
    "mysql": UrlRule("dsn", ("mysql",), socket_params=("unix_socket",), default_port=3306, no_database="/"),
    "redis": UrlRule("url", ("redis", "rediss", "unix"), path_schemes=("unix",), default_port=6379),
    "nats": UrlRule("url", ("nats", "tls", "ws", "wss"), default_host="127.0.0.1", default_port=4222),
    "rabbitmq": UrlRule("url", ("amqp", "amqps"), default_host="127.0.0.1", default_port=5672),
}


def check_url(kind: str, text: str) -> str | None:
    """What is wrong with `text` as the URL of a `kind` connection, or None when it is fine.

    The message never quotes the URL, not even its scheme: a value without `://` may be split
    at a colon inside the credentials.
    """
    rule = RULES[kind]
    expected = " or ".join(f"{scheme}://" for scheme in rule.schemes)
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unbalanced "[" where an IPv6 host would be
        return f"not a valid URL (the form is {rule.schemes[0]}://USER:PASSWORD@HOST:PORT/...; {_ENCODE})"
    if parts.scheme.lower() not in rule.schemes or not text.lower().startswith(f"{parts.scheme.lower()}://"):
        return f"expected a URL starting with {expected}"
    # Before offsets are taken: urlsplit drops tabs and newlines, so its parts would not line up.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return "the URL holds a control character (a tab, a newline); percent-encode it"
    if parts.netloc.count("@") > 1:
        return f"more than one '@' before the host ({_ENCODE})"
    if parts.scheme.lower() not in rule.path_schemes:
        problem = _port_problem(parts)
        if problem is not None:
            return problem
    # A password cut at '/', '?' or '#' leaves its end, and the real host, after the cut.
    if "@" in text[len(parts.scheme) + 3 + len(parts.netloc) :]:
        return f"an '@' after the host ({_ENCODE})"
    if parts.scheme.lower() in rule.path_schemes:
        return None if parts.path else "a unix socket URL needs the socket's path"
    if not parts.hostname and not _names_socket(parts, rule):
        return "the URL names no host"
    return None


def _port_problem(parts: SplitResult) -> str | None:
    hostinfo = parts.netloc.rpartition("@")[2]
    if hostinfo.startswith("["):
        port_text = hostinfo.partition("]")[2]
        if port_text and not port_text.startswith(":"):
            return "text after the IPv6 address ']' must be :PORT"
        port_text = port_text[1:]
    else:
        port_text = hostinfo.partition(":")[2]
    if not port_text:
        return None
    if not port_text.isascii() or not port_text.isdigit():
        return f"the port is not a number ({_ENCODE})"
    if not 1 <= int(port_text) <= 65535:
        return "the port must be between 1 and 65535"
    return None


def _names_socket(parts: SplitResult, rule: UrlRule) -> bool:
    try:
        query = parse_qs(parts.query)
    except ValueError:
        return False
    return any(query.get(name) for name in rule.socket_params)


def address(kind: str, text: str, default_host: str, default_port: int) -> str:
    """`host:port` of a connection URL for messages and logs: never its user, password, path
    or query. A URL that does not pass `check_url` gives a placeholder instead of a guess."""
    if kind in RULES and check_url(kind, text) is not None:
        return UNKNOWN_ADDRESS
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return UNKNOWN_ADDRESS
    host = parts.hostname or default_host
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{host}:{port or default_port}"


def safe_address(kind: str, text: str) -> str:
    """Where a `kind` connection URL points, for messages and logs: `host:port` with the
    driver's defaults filled in (`host:port/db` for a database server, the path of a unix socket
    URL). Never its user, password or query; a placeholder for a URL that fails `check_url`."""
    rule = RULES[kind]
    shown = address(kind, text, rule.default_host, rule.default_port)
    if shown == UNKNOWN_ADDRESS:
        return shown
    parts = urlsplit(text)
    if parts.scheme.lower() in rule.path_schemes:
        return parts.path
    if rule.no_database is not None:
        return f"{shown}{parts.path or rule.no_database}"
    return shown


def connection_address(connection: Connection) -> str:
    """`safe_address` of a connection entry's URL: what every remote provider prints."""
    return safe_address(connection.kind, str(connection.options[RULES[connection.kind].option]))


def secret_parts(value: str) -> list[str]:
    """A secret option's value and, when it is a URL, its credentials as written and decoded:
    what the log scrubber must never let through."""
    parts = [value]
    userinfo, at, _ = value.partition("://")[2].rpartition("@")
    if at:
        password = userinfo.partition(":")[2]
        parts += [userinfo, password, unquote(password)]
    return parts
