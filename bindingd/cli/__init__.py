"""The bindingd command line (`bindingd = bindingd.cli:main`).

`bindingd __complete ...` (what the shell completion scripts run at every TAB) is answered here,
before the daemon's modules are imported, so a TAB costs a YAML read, not a daemon's start-up.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["__complete"]:
        from bindingd.cli.completion import complete

        return complete(args[1:])
    from bindingd.cli.main import main as run

    return run(args)


__all__ = ["main"]
