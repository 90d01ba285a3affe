"""Builds the superweight package: its version read from CMake's project() (the one place it is
set) and its gRPC stubs generated from proto/superweight/v1 (never committed)."""
import os
import re
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join("superweight", "v1", "superweight.proto")


def source(relative):
    """A file of the source tree: beside this file in an sdist, one level up in the checkout."""
    for base in (HERE, os.path.dirname(HERE)):
        path = os.path.join(base, relative)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{relative}: neither in the package nor in the source tree above it")


def version():
    text = open(source("CMakeLists.txt")).read()
    match = re.search(r"project\(superweight VERSION ([0-9][0-9.]*)", text)
    if not match:
        raise RuntimeError("CMakeLists.txt: no project(superweight VERSION ...)")
    return match.group(1)


class BuildPy(build_py):
    def run(self):
        super().run()
        from grpc_tools import protoc
        proto_root = os.path.dirname(os.path.dirname(os.path.dirname(source(os.path.join("proto", PROTO)))))
        out = self.build_lib
        if protoc.main(["protoc", f"-I{proto_root}", f"--python_out={out}", f"--pyi_out={out}",
                        f"--grpc_python_out={out}", os.path.join(proto_root, PROTO)]) != 0:
            raise RuntimeError("protoc failed on " + PROTO)
        with open(os.path.join(out, "superweight", "_version.py"), "w") as f:
            f.write(f'__version__ = "{version()}"\n')


class Sdist(sdist):
    """The sdist carries the proto and CMakeLists.txt, so that it builds away from the tree."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        for relative in (os.path.join("proto", PROTO), "CMakeLists.txt", "LICENSE"):
            dst = os.path.join(base_dir, relative)
            os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
            shutil.copy(source(relative), dst)


setup(version=version(), cmdclass={"build_py": BuildPy, "sdist": Sdist})
