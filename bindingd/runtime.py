"""What the daemon serves right now: the resolved bindings of one env and their providers.

Services ask the runtime for a binding by name and type; the runtime answers with the provider
or with the error of the table. A SIGHUP reload builds the new set beside the old one, keeps
the providers of unchanged bindings, swaps, and closes the retired ones once their in-flight
calls are done.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

import structlog

from bindingd.config.model import Binding, Config
from bindingd.errors import BindingdError, Reason, backend_unavailable, permission_denied
from bindingd.providers.base import Provider
from bindingd.providers.connections import ProviderContext, SharedConnections
from bindingd.registry import VALUE_TYPES, create_provider
from bindingd.resiliency import Breakers

if TYPE_CHECKING:
    from bindingd.domain.kv import KVProvider
    from bindingd.domain.objects import ObjectsProvider
    from bindingd.domain.queue import QueueProvider
    from bindingd.domain.sql import SqlProvider
    from bindingd.providers.gateway.session import GatewaySession
    from bindingd.server.metrics import Metrics

log = structlog.get_logger("bindingd.runtime")
P = TypeVar("P", bound=Provider)

# How long a retired provider waits for its in-flight calls before it is closed anyway.
RETIRE_GRACE_S = 30.0
# How long one health probe of a backend may take.
PROBE_TIMEOUT_S = 5.0

SERVING = "serving"
NOT_SERVING = "not_serving"
UNKNOWN = "unknown"


@dataclass
class ProviderHandle:
    """A started provider with its health and its in-flight calls.

    A reload that keeps a binding's provider hands the same handle to the new config, so calls
    that began before any number of reloads are waited for when the provider finally retires.
    """

    provider: Provider | None
    health: str = UNKNOWN
    health_detail: str = ""
    # Set when the provider could not start: every call answers it.
    error: BindingdError | None = None
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()


@dataclass(frozen=True)
class Served:
    """One binding of the current config and the provider handle that serves it."""

    binding: Binding
    handle: ProviderHandle

    @property
    def provider(self) -> Provider | None:
        return self.handle.provider

    @property
    def health(self) -> str:
        return self.handle.health

    @property
    def health_detail(self) -> str:
        return self.handle.health_detail


class InFlight(Generic[P]):
    """The context manager of `Runtime.use`, and what its `with` gives: the binding and its
    provider, typed by the binding type asked for (a class: it is on every call's path)."""

    __slots__ = ("_handle", "_span", "_tracing", "binding", "provider")

    def __init__(self, served: Served, provider: P, tracing: Any = None) -> None:
        self.binding = served.binding
        self.provider = provider
        self._handle = served.handle
        # With traces on (bindingd.server.tracing): a child span for the provider's work.
        self._tracing = tracing
        self._span: Any = None

    def __enter__(self) -> InFlight[P]:
        handle = self._handle
        handle.in_flight += 1
        handle.idle.clear()
        if self._tracing is not None:
            b = self.binding
            self._span = self._tracing.backend(b.name, b.backend_kind, b.backend)
        return self

    def __exit__(self, *exc: object) -> None:
        handle = self._handle
        handle.in_flight -= 1
        if handle.in_flight == 0:
            handle.idle.set()
        if self._span is not None:
            self._tracing.end_backend(self._span, exc[0] is not None)


def provider_key(binding: Binding) -> tuple[Any, ...]:
    """What decides whether a binding needs a new provider: not its access, value or line."""
    connection = binding.connection
    return (
        binding.type,
        binding.backend_kind,
        connection.name if connection else None,
        tuple(sorted(connection.options.items())) if connection else (),
        connection.resiliency if connection else None,
        tuple(sorted(binding.options.items())),
    )


class Runtime:
    def __init__(
        self,
        config: Config,
        *,
        allow_writes: bool = False,
        clock: Callable[[], float] = time.time,
        on_health: Callable[[str, str], None] | None = None,
    ) -> None:
        self.config = config
        self.allow_writes = allow_writes
        self.clock = clock
        self._served: dict[str, Served] = {}
        self._on_health = on_health or (lambda name, status: None)
        # Background work: probes are cancelled at close, retirements are waited for.
        self._probes: set[asyncio.Task[Any]] = set()
        self._retirements: set[asyncio.Task[Any]] = set()
        self._reload_lock = asyncio.Lock()
        # One client per connection entry, shared by the providers of its bindings.
        self.connections = SharedConnections()
        # One circuit breaker per connection entry; its providers' calls follow its policy.
        self.breakers = Breakers()
        # Calls being served now, and when the last one began: what a drain waits on.
        self.calls_in_flight = 0
        self.last_call_at = time.monotonic()
        # Set when a drain begins: long-lived streams (queue consumers) end at their next poll.
        self.draining = False
        # The env's gateway session (bindingd.providers.gateway), when the env names a gateway
        # and the runtime serves calls (`serve_gateway`): every binding but the local ones goes
        # there (bindingd.server.forward).
        self.gateway: GatewaySession | None = None
        self._serve_gateway = False
        # Set by `bindingd serve --metrics`: calls.py records each call's outcome there.
        self.metrics: Metrics | None = None
        # Set by `bindingd serve` when OTEL_EXPORTER_OTLP_ENDPOINT is (bindingd.server.tracing).
        self.tracing: Any = None

    @property
    def env(self) -> str:
        return self.config.env

    @property
    def writes_refused(self) -> bool:
        return self.config.protected and not self.allow_writes

    def served(self) -> list[Served]:
        return list(self._served.values())

    async def start(self, *, background_probes: bool = True, serve_gateway: bool = False) -> None:
        """Start every provider. `background_probes=False` is for a caller that probes itself
        (`bindingd check`), so each backend is probed once, not twice at the same time.
        `serve_gateway`: open the session with the env's gateway in the background (the daemon;
        local bindings never wait for it)."""
        self._served = await self._build(self.config, reuse={})
        self._serve_gateway = serve_gateway
        if serve_gateway:
            self._open_gateway(self.config)
        if background_probes:
            self._spawn_probes()

    def is_local(self, name: str) -> bool:
        """Whether `name` is served here rather than through the env's gateway."""
        return name in self._served

    def _open_gateway(self, config: Config) -> None:
        from bindingd.providers.gateway.session import GatewaySession

        if config.gateway is not None:
            self.gateway = GatewaySession(config)
            self.gateway.start()

    async def reload(self, config: Config) -> dict[str, list[str]]:
        """Serve `config` from now on; return the names added, removed and changed.

        Reloads run one at a time, each against the result of the previous one.
        """
        async with self._reload_lock:
            old = self._served
            # A binding whose provider failed to start gets a fresh try on every reload.
            reuse = {
                name: s.handle
                for name, s in old.items()
                if name in config.bindings
                and s.handle.error is None
                and provider_key(config.bindings[name]) == provider_key(s.binding)
            }
            new = await self._build(config, reuse=reuse)
            old_config, self.config, self._served = self.config, config, new
            if self.gateway is not None or config.gateway is not None:
                await self._reload_gateway(old_config, config)
            kept = {id(s.handle) for s in new.values()}
            retired = {id(s.handle): s for s in old.values() if id(s.handle) not in kept}
            for s in retired.values():
                task = asyncio.get_running_loop().create_task(self._retire(s))
                self._retirements.add(task)
                task.add_done_callback(self._retirements.discard)
            for name in set(old) - set(new):
                self._on_health(name, UNKNOWN)
            self._spawn_probes()
            return {
                "added": sorted(set(new) - set(old)),
                "removed": sorted(set(old) - set(new)),
                "changed": sorted(
                    n for n in set(new) & set(old) if n not in reuse or new[n].binding != old[n].binding
                ),
            }

    async def _reload_gateway(self, old: Config, new: Config) -> None:
        """The same gateway: the session goes on (with the names the file now lists); another
        one, or none: the old session ends (and a new one opens)."""
        session = self.gateway
        if session is not None and old.gateway == new.gateway and old.env == new.env:
            session.listed = new.remote
            return
        if not self._serve_gateway:
            return  # a runtime that does not serve calls (check) never opens one
        if session is not None:
            self.gateway = None
            await session.close()
        self._open_gateway(new)

    async def close(self) -> None:
        if self.gateway is not None:
            session, self.gateway = self.gateway, None
            await session.close()
        async with self._reload_lock:  # a reload in progress finishes first
            for task in list(self._probes):
                task.cancel()
            served, self._served = self._served, {}
            handles = {id(s.handle): s for s in served.values()}
            await asyncio.gather(
                *self._retirements, *(self._retire(s) for s in handles.values()), return_exceptions=True
            )

    def backend_of(self, name: str) -> str:
        served = self._served.get(name)
        return served.binding.backend if served else ""

    def type_of(self, name: str) -> str | None:
        """The binding's type, or None when `name` is not a binding of the current config."""
        served = self._served.get(name)
        return served.binding.type if served else None

    def get(self, name: str) -> Served:
        served = self._served.get(name)
        if served is None:
            defined = ", ".join(sorted(self._served)) or "none"
            raise BindingdError(
                Reason.BINDING_NOT_FOUND,
                f'binding "{name}" is not defined in env "{self.env}" (defined: {defined})',
                binding=name,
                env=self.env,
            )
        return served

    def lookup(self, name: str, *binding_types: str) -> Served:
        """The binding if it has one of `binding_types` and its provider started."""
        served = self.get(name)
        if served.binding.type not in binding_types:
            raise BindingdError(
                Reason.WRONG_BINDING_TYPE,
                f'binding "{name}" is a {served.binding.type} binding, not {" or ".join(binding_types)}',
                binding=name,
                env=self.env,
                backend=served.binding.backend,
            )
        if served.handle.error is not None:
            raise served.handle.error
        return served

    @overload
    def use(self, name: str, binding_type: Literal["kv"], *, write: bool = False) -> InFlight[KVProvider]: ...
    @overload
    def use(
        self, name: str, binding_type: Literal["objects"], *, write: bool = False
    ) -> InFlight[ObjectsProvider]: ...
    @overload
    def use(
        self, name: str, binding_type: Literal["sql"], *, write: bool = False
    ) -> InFlight[SqlProvider]: ...
    @overload
    def use(
        self, name: str, binding_type: Literal["queue"], *, write: bool = False
    ) -> InFlight[QueueProvider]: ...
    def use(self, name: str, binding_type: str, *, write: bool = False) -> InFlight[Any]:
        """`with runtime.use(...) as served:` counts the call as in flight until the block ends,
        so a reload that retires the provider waits for it. `served.provider` is the binding
        type's Protocol: the registry builds a provider of that type for a binding of that type."""
        served = self.lookup(name, binding_type)
        if write:
            self.check_writable(served.binding)
        # lookup() raised for a provider that failed to start; the others have one.
        assert served.provider is not None
        return InFlight(served, served.provider, self.tracing)

    def check_writable(self, binding: Binding) -> None:
        if self.writes_refused:
            raise permission_denied(
                f'env "{self.env}" is protected: writes need --allow-writes on the daemon '
                f'(bindingd serve --allow-writes, or bindingd run --allow-writes) (binding "{binding.name}")'
            )
        if binding.access == "read-only":
            raise permission_denied(
                f'binding "{binding.name}" is read-only in env "{self.env}" '
                f"(access: read-only in {self.config.path.name}); writes are refused"
            )

    async def _build(self, config: Config, reuse: dict[str, ProviderHandle]) -> dict[str, Served]:
        built: dict[str, Served] = {}
        for name, binding in config.bindings.items():
            handle = reuse.get(name) or await self._start_one(binding, config.state_dir)
            built[name] = Served(binding, handle)
        return built

    async def _start_one(self, binding: Binding, state_dir: Path) -> ProviderHandle:
        if binding.type in VALUE_TYPES:
            self._on_health(binding.name, SERVING)
            return ProviderHandle(None, SERVING, "value set")
        try:
            provider = create_provider(binding, ProviderContext(state_dir, self.connections))
            await provider.start()
        except Exception as e:
            # The daemon goes on serving the other bindings; calls to this one get the reason.
            if isinstance(e, BindingdError):
                err = e
            else:
                log.exception("binding failed to start", binding=binding.name, env=binding.env)
                err = backend_unavailable(f"the {binding.backend_kind} provider failed to start: {e}")
            log.error("binding not serving", binding=binding.name, env=binding.env, error=err.message)
            self._on_health(binding.name, NOT_SERVING)
            err = err.with_context(binding=binding.name, env=binding.env, backend=binding.backend)
            return ProviderHandle(None, NOT_SERVING, err.message, error=err)
        guarded: Provider = self.breakers.guard(provider, binding.type, binding.connection)
        return ProviderHandle(guarded)

    async def probe(self) -> list[Served]:
        """Probe every backend once, concurrently; return every binding with its health."""
        served = self.served()
        handles = {id(s.handle): s for s in served if s.provider is not None}
        await asyncio.gather(*(self._probe(s) for s in handles.values()))
        return served

    def _spawn_probes(self) -> None:
        """Probe in the background: readiness never waits on a remote backend."""
        task = asyncio.get_running_loop().create_task(self.probe())
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _probe(self, served: Served) -> None:
        handle = served.handle
        assert handle.provider is not None
        started = time.perf_counter()
        try:
            detail = await asyncio.wait_for(handle.provider.check(), PROBE_TIMEOUT_S)
        except BindingdError as e:
            handle.health, handle.health_detail = NOT_SERVING, e.message
        except TimeoutError:
            handle.health, handle.health_detail = NOT_SERVING, f"no answer within {PROBE_TIMEOUT_S:.0f}s"
        except Exception as e:
            # A provider bug must not kill the probe task unseen: the binding says so instead.
            log.exception("probe failed unexpectedly", binding=served.binding.name)
            handle.health = NOT_SERVING
            handle.health_detail = f"the probe failed unexpectedly ({type(e).__name__}); see the daemon's log"
        else:
            rtt_ms = (time.perf_counter() - started) * 1000
            handle.health, handle.health_detail = SERVING, f"{detail}, {rtt_ms:.1f} ms"
        self._on_health(served.binding.name, handle.health)

    async def _retire(self, served: Served) -> None:
        handle = served.handle
        try:
            await asyncio.wait_for(handle.idle.wait(), RETIRE_GRACE_S)
        except TimeoutError:
            log.warning("closing a binding with calls still in flight", binding=served.binding.name)
        if handle.provider is not None:
            await handle.provider.close()
