"""Regenerate the client stubs from proto/ by hand: Python by default, TypeScript with ``--node``.

The package builds generate them on their own (`pip install clients/python` runs
clients/python/build_stubs.py, `npm run build` in clients/node runs buf with ts-proto), and `make`
uses those; this script runs the same two generators for whoever edits a .proto and wants the stubs
now. Python needs grpcio-tools (in the dev extras), Node `npm ci` in clients/node.
The output is never edited by hand and not committed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python"
NODE = ROOT / "clients" / "node"


def generate_python() -> int:
    sys.path.insert(0, str(CLIENT))
    import build_stubs

    out = CLIENT / "bindingd_client" / "proto"
    count = build_stubs.generate(out, ROOT / "proto")
    print(f"generated {count} protos into {out.relative_to(ROOT)}")
    return 0


def generate_node() -> int:
    if not (NODE / "node_modules" / ".bin" / "buf").exists():
        print(f"buf is missing: run npm ci in {NODE}", file=sys.stderr)
        return 1
    return subprocess.run(["npm", "run", "--silent", "gen"], cwd=NODE, check=False).returncode


def main() -> int:
    if sys.argv[1:] == ["--node"]:
        return generate_node()
    if sys.argv[1:]:
        print("usage: python tools/gen_proto.py [--node]", file=sys.stderr)
        return 2
    return generate_python()


if __name__ == "__main__":
    raise SystemExit(main())
