"""The lifecycle every provider shares. A provider serves one binding type for one backend: it
implements that type's Protocol (`bindingd.domain.kv.KVProvider`, `...objects.ObjectsProvider`,
`...sql.SqlProvider`, `...queue.QueueProvider`), each of which extends this one.

Providers raise `bindingd.errors.BindingdError` for every failure they can name (the service
adds the binding and env to the message) and never see gRPC types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    from bindingd.config.model import Binding
    from bindingd.providers.connections import ProviderContext


@runtime_checkable
class Provider(Protocol):
    @classmethod
    def create(cls, binding: Binding, context: ProviderContext) -> Self:
        """A new, not yet started provider for `binding` (`bindingd.registry` calls it). Providers
        of one connection entry share its client through `context.connections`."""
        ...

    async def start(self) -> None:
        """Open files or pools. Must not wait on a remote backend: readiness never does."""

    async def close(self) -> None:
        """Release everything; in-flight calls have finished or been cancelled."""

    async def check(self) -> str:
        """Probe the backend once (reachable, authenticated); return a short detail or raise."""
