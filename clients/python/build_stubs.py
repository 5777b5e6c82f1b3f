"""Generate the gRPC stubs of bindingd_client from the .proto files (used by setup.py and tools/gen_proto.py).

protoc writes absolute imports (`from bindingd.v1 import kv_pb2`) that would resolve to the daemon
package; the stubs live inside the client package, so those imports are rewritten to relative ones.
This module imports only the standard library at the top: grpc_tools is a build requirement of the
package (pyproject.toml), present in the isolated build environment, not a runtime dependency.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMPORT = re.compile(r"^from bindingd\.v1 import (\w+)", re.MULTILINE)
INIT = '"""Generated from proto/bindingd/v1 by the package build (clients/python/build_stubs.py)."""\n'


def proto_root() -> Path:
    """The folder holding bindingd/v1/*.proto: ./proto inside an sdist, ../../proto in the repository."""
    for candidate in (HERE / "proto", HERE.parent.parent / "proto"):
        if (candidate / "bindingd" / "v1").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no proto/bindingd/v1 beside {HERE} or at the repository root: build from a bindingd "
        "checkout or from an sdist made by `python -m build clients/python`"
    )


def protos(root: Path) -> list[Path]:
    return sorted((root / "bindingd" / "v1").glob("*.proto"))


def generate(out: Path, root: Path | None = None) -> int:
    """Write the Python stubs into `out` (replaced whole, only once protoc succeeded); return the count."""
    import tempfile

    from grpc_tools import protoc

    root = root or proto_root()
    files = [str(p.relative_to(root)) for p in protos(root)]
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{root}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *files,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {root}")
        staging = out.with_name(out.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for src in sorted((Path(tmp) / "bindingd" / "v1").iterdir()):
            (staging / src.name).write_text(IMPORT.sub(r"from . import \1", src.read_text()))
        (staging / "__init__.py").write_text(INIT)
    # Swap in only now, so a failed run leaves the old stubs.
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return len(files)
