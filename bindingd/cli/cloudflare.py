"""`bindingd cloudflare deploy`: the proxy Worker for an env's cloudflare bindings
(bindingd/providers/cloudflare/deploy.py does the work).

Exit codes as the rest of the CLI: 0 done, 1 wrangler failed, 2 a config or usage mistake.
Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bindingd.cli import style

EXIT_FAILED = 1
EXIT_CONFIG = 2


def cmd_cloudflare(args: argparse.Namespace) -> int:
    from bindingd.providers.cloudflare import deploy

    options = deploy.Options(
        env=args.env,
        config=args.config,
        cwd=Path.cwd(),
        dry_run=args.dry_run,
        remote=getattr(args, "remote", False),
        name=args.name,
        out=args.out,
        connection=args.connection,
    )
    try:
        return deploy.deploy(options, os.environ, lambda line: print(line, flush=True))
    except deploy.DeployError as e:
        message = str(e)
        print(f"bindingd: {style.printable(message)}", file=sys.stderr)
        return EXIT_FAILED if message.startswith("wrangler ") else EXIT_CONFIG
