"""What may be written in a bindingd.yaml, read from the one provider table (`bindingd.registry`).

A connection kind lists the binding types it can serve and its options; a provider's binding
options are keyed by (binding type, backend kind). A new backend adds rows to the registry, not
code paths here.
"""

from __future__ import annotations

from bindingd import registry
from bindingd.registry import ConnectionKind, Option

__all__ = [
    "COMMON_BINDING_KEYS",
    "ConnectionKind",
    "Option",
    "binding_options",
    "connection_kinds",
    "kinds_for",
]

# Keys every binding may have, whatever its provider. `local: true` keeps a binding on its own
# provider in an env served through a gateway (it means nothing elsewhere).
COMMON_BINDING_KEYS = frozenset({"type", "connection", "access", "local"})


def connection_kinds() -> dict[str, ConnectionKind]:
    return registry.CONNECTION_KINDS


def binding_options(binding_type: str, kind: str) -> dict[str, Option] | None:
    """The options of the provider for `binding_type` on `kind`; None when there is none."""
    spec = registry.PROVIDERS.get((binding_type, kind))
    return None if spec is None else spec.options


def kinds_for(binding_type: str) -> list[str]:
    """The backend kinds that have a provider for `binding_type`."""
    return sorted(kind for (served, kind) in registry.PROVIDERS if served == binding_type)
