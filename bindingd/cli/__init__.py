"""The bindingd command line (`bindingd = bindingd.cli:main`).

`bindingd __complete ...` (what the shell completion scripts run at every TAB) is answered here,
before the daemon's modules are imported, so a TAB costs a YAML read, not a daemon's start-up.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["__complete"]:
        from bindingd.cli.completion import complete

        return complete(args[1:])
    # gRPC's C core logs some events itself, raw, at INFO (its absl logging lets them through
    # when GRPC_VERBOSITY is unset): a failed TLS handshake at login, or "Got goaway ... Cancelling
    # all calls" when `bindingd call`'s short-lived daemon stops while the channel's connection
    # is still closing. Every command says what went wrong in bindingd's words instead; errors
    # still show, and GRPC_VERBOSITY set by the user wins. Read once, when grpc is first
    # imported: so here, before the import (a daemon started by `call` or `run` inherits it).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from bindingd.cli.main import main as run

    return run(args)


__all__ = ["main"]
