"""The audit trail: every write to a remote backend is logged at info (who, binding, env, op, key)."""

from __future__ import annotations

from typing import Protocol

import structlog

from bindingd.config.model import Binding

log = structlog.get_logger("bindingd.audit")


class Peer(Protocol):
    """Who made a call: a call's `grpc.aio.ServicerContext`, or its peer kept after it ended."""

    def peer(self) -> str: ...


def audit_write(binding: Binding, operation: str, key: str, context: Peer) -> None:
    if binding.connection is None:
        return
    log.info(
        "remote write",
        peer=context.peer(),
        binding=binding.name,
        env=binding.env,
        backend=binding.backend,
        operation=operation,
        key=key,
    )
