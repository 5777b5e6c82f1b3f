"""The audit trail: every write to a remote backend is logged at info (who, binding, env, op, key)."""

from __future__ import annotations

import grpc
import structlog

from bindingd.config.model import Binding

log = structlog.get_logger("bindingd.audit")


def audit_write(binding: Binding, operation: str, key: str, context: grpc.aio.ServicerContext) -> None:
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
