"""Build hooks of bindingd-client; everything else is in pyproject.toml.

The gRPC stubs (bindingd_client/proto/) are generated from proto/*.proto by every build, never
committed: a wheel gets them in its build folder, an editable install in the source tree. The sdist
carries the .proto files (copied from the repository root) so that it builds a wheel on its own.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the build backend does not put the project folder on the path

import build_stubs  # noqa: E402


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        super().run()
        package = HERE if self.editable_mode else Path(self.build_lib)
        count = build_stubs.generate(package / "bindingd_client" / "proto")
        print(f"generated the gRPC stubs of {count} protos")


class SdistWithProtos(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        root = build_stubs.proto_root()
        for proto in build_stubs.protos(root):
            target = Path(base_dir) / "proto" / proto.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(proto, target)


setup(cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProtos})
