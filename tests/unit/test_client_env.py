"""The env object: bindings as attributes, errors for unknown names, refresh (fake transport)."""

from __future__ import annotations

import pytest
from bindingd_client import (
    BindingError,
    BindingNotFound,
    Env,
    KVNamespace,
    KVNamespaceSync,
    SyncEnv,
    UnsupportedBinding,
)
from bindingd_client.proto import bindings_pb2, vars_pb2


def listing(env="dev", **types):
    return bindings_pb2.ListBindingsResponse(
        env=env,
        bindings=[
            bindings_pb2.BindingInfo(name=n, type=t, env=env, backend="local") for n, t in types.items()
        ],
    )


class Daemon:
    """Answers Bindings.List / Vars.GetAll / Vars.Get from plain attributes."""

    target = "unix:///fake.sock"

    def __init__(self):
        self.listing = listing(CACHE="kv", SITE_NAME="var", API_KEY="secret", APP_DB="vectorize")
        self.values = {"SITE_NAME": "Example Shop", "API_KEY": "k-123"}
        self.closed = False

    def answer(self, call):
        if call.method == "Bindings.List":
            return call.parse(self.listing)
        if call.method == "Vars.GetAll":
            return call.parse(vars_pb2.VarGetAllResponse(values=self.values))
        raise AssertionError(call.method)


class AsyncDaemon(Daemon):
    async def call(self, call):
        return self.answer(call)

    async def close(self):
        self.closed = True


class SyncDaemon(Daemon):
    def call(self, call):
        return self.answer(call)

    def close(self):
        self.closed = True


async def make_env(daemon=None):
    env = Env(daemon or AsyncDaemon())
    await env.refresh()
    return env


def make_sync_env(daemon=None):
    env = SyncEnv(daemon or SyncDaemon())
    env.refresh()
    return env


async def test_bindings_as_attributes():
    env = await make_env()
    assert env._env_name == "dev"
    assert isinstance(env.CACHE, KVNamespace)
    assert env.CACHE is env.CACHE
    assert env.SITE_NAME == "Example Shop"
    assert type(env.API_KEY) is str
    assert env["CACHE"] is env.CACHE
    assert set(env._bindings) == {"API_KEY", "APP_DB", "CACHE", "SITE_NAME"}
    assert env._bindings["CACHE"].type == "kv"
    assert "CACHE" in env and "NOPE" not in env
    assert list(env) == ["API_KEY", "APP_DB", "CACHE", "SITE_NAME"]
    assert len(env) == 4


def test_sync_env_gives_sync_namespaces():
    env = make_sync_env()
    assert isinstance(env.CACHE, KVNamespaceSync)
    assert env.SITE_NAME == "Example Shop"


async def test_unknown_binding_message_and_getattr_default():
    env = await make_env()
    with pytest.raises(BindingNotFound) as info:
        _ = env.CACHE2
    assert str(info.value) == (
        'binding "CACHE2" is not defined in env "dev" (defined: API_KEY, APP_DB, CACHE, SITE_NAME)'
    )
    assert info.value.binding == "CACHE2"
    assert info.value.env == "dev"
    assert getattr(env, "CACHE2", None) is None
    assert not hasattr(env, "CACHE2")
    with pytest.raises(BindingNotFound):
        env["CACHE2"]


async def test_dir_lists_the_bindings():
    env = await make_env()
    names = dir(env)
    assert {"API_KEY", "APP_DB", "CACHE", "SITE_NAME", "refresh", "aclose"} <= set(names)


async def test_unsupported_type_is_a_placeholder():
    env = await make_env()
    db = env.APP_DB
    assert isinstance(db, UnsupportedBinding)
    with pytest.raises(NotImplementedError, match="does not support vectorize bindings yet"):
        db.prepare("SELECT 1")
    with pytest.raises(NotImplementedError):
        db()
    assert "APP_DB" in repr(db)


async def test_repr_never_shows_secret_values():
    env = await make_env()
    text = repr(env)
    assert "k-123" not in text and "Example Shop" not in text
    assert "API_KEY (secret)" in text and "dev" in text


async def test_refresh_picks_up_changes_and_keeps_unchanged_objects():
    daemon = AsyncDaemon()
    env = await make_env(daemon)
    cache = env.CACHE
    daemon.listing = listing(env="dev", CACHE="kv", SESSIONS="kv", SITE_NAME="var")
    daemon.values = {"SITE_NAME": "Renamed"}
    await env.refresh()
    assert env.CACHE is cache
    assert isinstance(env.SESSIONS, KVNamespace)
    assert env.SITE_NAME == "Renamed"
    assert getattr(env, "API_KEY", None) is None


async def test_async_context_manager_closes():
    daemon = AsyncDaemon()
    async with await make_env(daemon) as env:
        assert env.SITE_NAME
    assert daemon.closed


def test_sync_context_manager_closes():
    daemon = SyncDaemon()
    with make_sync_env(daemon) as env:
        assert env.SITE_NAME
    assert daemon.closed


async def test_dunder_probes_stay_plain_attribute_errors():
    env = await make_env()
    with pytest.raises(AttributeError) as info:
        env.__wrapped__  # noqa: B018
    assert not isinstance(info.value, BindingError)


def test_empty_env_message():
    env = SyncEnv(SyncDaemon())
    env._apply(listing(env="qa"), {})
    with pytest.raises(BindingNotFound, match=r'not defined in env "qa" \(defined: none\)'):
        _ = env.X


def test_forgetting_to_await_connect_says_so():
    from bindingd_client import connect

    pending = connect("unix:///nowhere.sock")
    with pytest.raises(AttributeError, match="must be awaited"):
        _ = pending.CACHE
