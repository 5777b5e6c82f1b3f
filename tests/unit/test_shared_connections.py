"""One client per connection entry, opened by its kind's client module and handed to every
provider of the entry, whatever its binding type (issue 13).

Before, each provider passed its own opener to `acquire`, which used it only when no client was
open yet: on a kind serving kv and sql, the second provider got the first one's client."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from bindingd import registry
from bindingd.config.model import Connection
from bindingd.providers.connections import SharedConnections
from bindingd.registry import ConnectionKind, Option


class TwoTypeClient:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.closed = False


@pytest.fixture
def two_type_kind(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A connection kind `both` serving kv and sql, whose client module counts what it does."""
    counts = {"opened": 0, "closed": 0}
    module = types.ModuleType("fake_both_client")

    async def open_client(connection: Connection) -> TwoTypeClient:
        counts["opened"] += 1
        return TwoTypeClient(connection)

    async def close_client(client: TwoTypeClient) -> None:
        counts["closed"] += 1
        client.closed = True

    module.open_client = open_client  # type: ignore[attr-defined]
    module.close_client = close_client  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_both_client", module)
    kinds = {
        **registry.CONNECTION_KINDS,
        "both": ConnectionKind(frozenset({"kv", "sql"}), {"url": Option(str)}, "fake_both_client"),
    }
    monkeypatch.setattr(registry, "CONNECTION_KINDS", kinds)
    return counts


async def test_providers_of_two_binding_types_share_the_kinds_client(two_type_kind: dict[str, Any]) -> None:
    shared = SharedConnections()
    connection = Connection("db", "both", {"url": "x"})
    # What a KV provider and a SQL provider of the same entry each do at start.
    kv_client = await shared.acquire(connection, TwoTypeClient)
    sql_client = await shared.acquire(connection, TwoTypeClient)
    assert kv_client is sql_client
    assert kv_client.connection is connection
    assert two_type_kind == {"opened": 1, "closed": 0}

    await shared.release(connection)
    assert two_type_kind["closed"] == 0  # the SQL provider still uses it
    await shared.release(connection)
    assert two_type_kind == {"opened": 1, "closed": 1}
    assert kv_client.closed and len(shared) == 0


async def test_a_provider_expecting_another_client_is_refused_loudly(two_type_kind: dict[str, Any]) -> None:
    shared = SharedConnections()
    connection = Connection("db", "both", {"url": "x"})
    await shared.acquire(connection, TwoTypeClient)

    class SqlPool:
        pass

    with pytest.raises(TypeError, match='client of both connection "db" is a TwoTypeClient, not the SqlPool'):
        await shared.acquire(connection, SqlPool)
    await shared.release(connection)  # the refused acquire took no reference
    assert two_type_kind == {"opened": 1, "closed": 1}


async def test_entries_that_differ_get_clients_of_their_own(two_type_kind: dict[str, Any]) -> None:
    shared = SharedConnections()
    first = await shared.acquire(Connection("db", "both", {"url": "x"}), TwoTypeClient)
    second = await shared.acquire(Connection("db", "both", {"url": "y"}), TwoTypeClient)
    assert first is not second and len(shared) == 2


def test_every_remote_kind_names_a_client_module_with_an_opener() -> None:
    """The registry's client modules exist and define what SharedConnections calls."""
    for kind, spec in registry.CONNECTION_KINDS.items():
        if spec.client is None:
            continue
        module = registry.client_module(kind)
        assert callable(module.open_client) and callable(module.close_client), kind
        assert spec.serves, kind


def test_every_provider_target_loads() -> None:
    for (binding_type, kind), spec in registry.PROVIDERS.items():
        if spec.target is None:
            assert binding_type in registry.VALUE_TYPES
            continue
        cls = registry._load(spec.target)
        assert callable(cls.create), (binding_type, kind)
        assert kind == "local" or binding_type in registry.CONNECTION_KINDS[kind].serves
