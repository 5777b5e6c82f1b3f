"""What the driver wrappers (providers/postgres/driver.py, providers/mysql/driver.py) share: a
check that a private driver entry point still has the shape they call, and the record of which
uses take their public fallback.

The drivers are pinned (pyproject.toml) because bindingd calls past their public API. A wrapper
whose private entry point moved takes its public fallback instead, and says so once: an upgrade
costs speed, never correctness. tests/providers/test_*_driver.py fail when an entry point moves,
so the upgrade is a red test first.
"""

from __future__ import annotations

import inspect
from typing import Any

import structlog


def signature_problem(
    owner: Any, name: str, positional: tuple[str, ...], keywords: tuple[str, ...] = ()
) -> str | None:
    """Why `owner.name` cannot be called as a wrapper calls it, or None when it can: a coroutine
    function whose parameters after `self` start with `positional` (in that order), that takes
    each of `keywords`, and that requires nothing more."""
    where = f"{getattr(owner, '__qualname__', owner)}.{name}"
    function = getattr(owner, name, None)
    if function is None:
        return f"{where} is gone"
    if not inspect.iscoroutinefunction(function):
        return f"{where} is no longer a coroutine function"
    try:
        parameters = list(inspect.signature(function).parameters.values())[1:]  # past self
    except (TypeError, ValueError):
        return f"{where} has no readable signature"
    names = [p.name for p in parameters]
    if names[: len(positional)] != list(positional) or any(
        p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters[: len(positional)]
    ):
        return f"{where}{inspect.signature(function)} no longer starts with {', '.join(positional) or '()'}"
    missing = [k for k in keywords if k not in names[len(positional) :]]
    if missing:
        return f"{where}{inspect.signature(function)} takes no {', '.join(missing)}"
    required = [
        p.name
        for p in parameters[len(positional) :]
        if p.name not in keywords and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        return f"{where}{inspect.signature(function)} now requires {', '.join(required)}"
    return None


def attribute_problem(owner: Any, name: str) -> str | None:
    """Why `owner` (a class with __slots__, or an instance) has no attribute `name`, or None."""
    if hasattr(owner, name):
        return None
    return f"{getattr(owner, '__qualname__', type(owner).__qualname__)}.{name} is gone"


def problems(checks: dict[str, list[str | None]]) -> dict[str, str]:
    """Each use with at least one problem, and its problems."""
    return {use: "; ".join(p for p in found if p) for use, found in checks.items() if any(found)}


class Fallbacks:
    """The private-API uses of one driver that go the public way, each with why. `problems` is
    filled once (at import, and from the first connection for what only an instance shows);
    tests put a use in it to force its fallback."""

    def __init__(self, driver: str, version: str, logger: Any, found: dict[str, str]) -> None:
        self.driver = f"{driver} {version}"
        self.problems = found
        self.warned: set[str] = set()
        self._log: structlog.stdlib.BoundLogger = logger

    def taken(self, use: str, cost: str) -> bool:
        """Whether `use` goes the public way. The first time it does, a warning names the driver
        version, what changed and what the fallback costs (never once per call)."""
        why = self.problems.get(use)
        if why is None:
            return False
        if use not in self.warned:
            self.warned.add(use)
            self._log.warning(
                f"{self.driver}: a private API bindingd relies on changed; using the public fallback",
                use=use,
                why=why,
                cost=cost,
            )
        return True
