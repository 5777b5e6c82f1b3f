"""structlog set-up: console lines on a TTY, JSON lines otherwise, to stderr.

Nothing logged may hold a credential: loggers get binding names, keys and reasons, never
config values of connections or secrets.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Shorter secrets are not scrubbed: replacing every "ab" would garble the log and reveal little.
MIN_REDACTED = 4
REDACTED = "[redacted]"
# Every secret value this process has loaded (connection credentials, secret bindings).
_secrets: set[str] = set()


def redact(*values: str) -> None:
    """Scrub these values from every log line from now on, tracebacks included (a driver's
    exception may quote a DSN in its message, and format_exc_info prints it as it is)."""
    _secrets.update(v for v in values if len(v) >= MIN_REDACTED)


def _scrub(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):  # longest first: a URL before its password
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrub_secrets(
    logger: object, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the last before the renderer, so it sees the formatted traceback."""
    if _secrets:
        for key, value in event_dict.items():
            if isinstance(value, str):
                event_dict[key] = _scrub(value)
            elif not isinstance(value, int | float | bool | None):
                text = str(value)  # an exception or a list holding a secret becomes its scrubbed text
                scrubbed = _scrub(text)
                if scrubbed != text:
                    event_dict[key] = scrubbed
    return event_dict


def configure(level: str = "info", *, json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrub_secrets,
            renderer,
        ],
        # Filtering at bind time makes a disabled debug call nearly free on the hot path.
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
