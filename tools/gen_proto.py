"""Generate the client stubs from proto/: Python by default, TypeScript with ``--node``.

Python goes into clients/python/bindingd_client/proto/. protoc writes absolute imports
(`from bindingd.v1 import kv_pb2`) that would resolve to the daemon package; the stubs live
inside the client package, so those imports are rewritten to relative ones.

TypeScript goes into clients/node/src/gen/ through ts-proto (installed by npm in clients/node),
as plain interfaces plus grpc-js service definitions. The output is built, never edited by
hand, and not committed.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "clients" / "python" / "bindingd_client" / "proto"
NODE = ROOT / "clients" / "node"
NODE_OUT = NODE / "src" / "gen"
TS_PROTO_OPTIONS = ",".join(
    (
        "outputServices=grpc-js",
        "esModuleInterop=true",
        "importSuffix=.js",
        "forceLong=bigint",  # int64 stays exact; the bindings convert to numbers where Workers does
        "oneof=unions",
        "outputJsonMethods=false",
        "outputPartialMethods=true",
    )
)
IMPORT = re.compile(r"^from bindingd\.v1 import (\w+)", re.MULTILINE)


def _protos() -> list[str]:
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))


def _protoc(protos: list[str], *options: str) -> bool:
    """Run grpc_tools' protoc on `protos` with these include, plugin and output options."""
    if protoc.main(["protoc", f"-I{PROTO_ROOT}", *options, *protos]) != 0:
        print("protoc failed", file=sys.stderr)
        return False
    return True


def _replace(out: Path, staging: Path, count: int) -> None:
    """Swap the freshly generated `staging` in for `out`, so a failed run leaves the old stubs."""
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    print(f"generated {count} protos into {out.relative_to(ROOT)}")


def generate_node() -> int:
    plugin = NODE / "node_modules" / ".bin" / "protoc-gen-ts_proto"
    if not plugin.exists():
        print(f"{plugin} is missing: run npm ci in {NODE}", file=sys.stderr)
        return 1
    protos = _protos()
    staging = NODE_OUT.with_name("gen.new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    options = (
        f"--plugin=protoc-gen-ts_proto={plugin}",
        f"--ts_proto_out={staging}",
        f"--ts_proto_opt={TS_PROTO_OPTIONS}",
    )
    if not _protoc(protos, *options):
        return 1
    _replace(NODE_OUT, staging, len(protos))
    return 0


def main() -> int:
    if sys.argv[1:] == ["--node"]:
        return generate_node()
    protos = _protos()
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        options = (f"-I{include}", f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}")
        if not _protoc(protos, *options):
            return 1
        generated = Path(tmp) / "bindingd" / "v1"
        staging = OUT.with_name("proto.new")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for src in sorted(generated.iterdir()):
            text = IMPORT.sub(r"from . import \1", src.read_text())
            (staging / src.name).write_text(text)
        (staging / "__init__.py").write_text(
            '"""Generated from proto/bindingd/v1 by tools/gen_proto.py."""\n'
        )
        _replace(OUT, staging, len(protos))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
