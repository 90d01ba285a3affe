"""check_build_context.py's reading of .dockerignore and the Dockerfile (make docker-context-test)."""
import os
import subprocess
import sys
import textwrap

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import check_build_context as cbc  # noqa: E402

ROOT = cbc.ROOT


def ignore(text):
    return cbc.DockerIgnore(cbc.read_dockerignore(textwrap.dedent(text)))


def repo_ignore():
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        return cbc.DockerIgnore(cbc.read_dockerignore(f.read()))


@pytest.mark.parametrize("path", [
    "newlib/CMakeLists.txt", "newlib/sub/x.cc",  # a source directory nobody listed
    "CMakeLists.txt", "engine/CMakeLists.txt", "cli/command_line.cc", "tests/CMakeLists.txt",
    "tests/unit/gguf_test.cc", "server/data/eval/piqa/valid.jsonl", "server/data/SOURCES.md",
    "tools/setup.sh", "tests/builder/x.cc",  # build* is the top level's only
])
def test_repo_dockerignore_admits_sources(path):
    assert not repo_ignore().excluded(path)


@pytest.mark.parametrize("path", [
    "build", "build/bin/superweightd", "build-asan/x.o", "build-fuzz/corpus/a",
    "build/dockerd/data/vfs/dir/x",
    ".venv/bin/python", ".venv-lmeval/lib/x.py", ".venv-bench", "models/m.gguf", ".git",
    ".git/HEAD", "testdata/vocab/x.gguf", "tests/e2e/__pycache__/conftest.cpython-311.pyc",
    "__pycache__/x.pyc", "bench/x.pyc", ".pytest_cache/v/cache", "tests/.pytest_cache/README.md",
])
def test_repo_dockerignore_keeps_out(path):
    assert repo_ignore().excluded(path)


def test_patterns_match_from_the_root():
    ig = ignore("""
        # a comment
        build*
        /models
        docs/*.md
        """)
    assert ig.excluded("build-x/a") and ig.excluded("models/a.gguf")
    assert not ig.excluded("src/build/a")  # no implicit **/ (unlike .gitignore)
    assert not ig.excluded("src/models/a")
    assert ig.excluded("docs/a.md") and not ig.excluded("docs/sub/a.md")
    assert not ig.excluded("# a comment")


def test_double_star_spans_any_depth():
    ig = ignore("""
        **/__pycache__
        a/**/z
        logs/**
        """)
    assert ig.excluded("__pycache__/x") and ig.excluded("p/q/__pycache__/x.pyc")
    assert ig.excluded("a/z") and ig.excluded("a/b/c/z") and not ig.excluded("b/z")
    assert ig.excluded("logs/x/y") and not ig.excluded("logsx")


def test_exceptions_last_match_wins():
    ig = ignore("""
        *.md
        !README.md
        data
        !data/keep
        """)
    assert ig.excluded("NOTES.md") and not ig.excluded("README.md")
    assert ig.excluded("data/x") and not ig.excluded("data/keep")
    assert not ig.excluded("data/keep/deeper")  # a re-admitted directory's contents
    assert ignore("*.md\n!README.md\nREADME*\n").excluded("README.md")  # the last one decides


def test_readmitted_file_under_a_kept_out_directory(tmp_path):
    for rel in ("data/x", "data/keep", "src/a"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    entries = cbc.context_files(str(tmp_path), ignore("data\n!data/keep\n"))
    assert sorted(entries) == ["data", "data/keep", "src", "src/a"]


def test_question_mark_and_classes():
    ig = ignore("""
        ?.txt
        [ab]*.log
        """)
    assert ig.excluded("x.txt") and not ig.excluded("xy.txt")
    assert ig.excluded("a1.log") and ig.excluded("b.log") and not ig.excluded("c.log")


def make_tree(tmp_path, files, dockerfile, dockerignore=""):
    for rel, body in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)
    (tmp_path / "Dockerfile").write_text(textwrap.dedent(dockerfile))
    (tmp_path / ".dockerignore").write_text(textwrap.dedent(dockerignore))
    return tmp_path


def layout(tmp_path, name="build"):
    with open(tmp_path / "Dockerfile") as f:
        stages = cbc.dockerfile_stages(f.read())
    with open(tmp_path / ".dockerignore") as f:
        entries = cbc.context_files(str(tmp_path), cbc.DockerIgnore(cbc.read_dockerignore(f.read())))
    rootfs = tmp_path.parent / (tmp_path.name + "-rootfs")
    cbc.lay_out(cbc.build_stage(stages, name), str(tmp_path), entries, str(rootfs))
    return sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*") if p.is_file())


def test_copy_forms_and_workdir(tmp_path):
    make_tree(tmp_path, {"CMakeLists.txt": "", "a/x.cc": "", "a/b/y.h": "", "c/z.cc": "",
                         "n.txt": "", "build/o": ""}, """
        FROM debian AS build
        WORKDIR /src
        COPY CMakeLists.txt ./
        COPY a a
        WORKDIR sub
        COPY ["c", "cc"]
        COPY n.txt renamed.txt
        COPY --chown=1:1 n.txt \\
             a/x.cc /abs/
        FROM debian
        COPY --from=build /src/a /a
        """, "build\n")
    assert layout(tmp_path) == ["abs/n.txt", "abs/x.cc", "src/CMakeLists.txt", "src/a/b/y.h",
                                "src/a/x.cc", "src/sub/cc/z.cc", "src/sub/renamed.txt"]


def test_copy_dot_takes_what_dockerignore_admits(tmp_path):
    make_tree(tmp_path, {"CMakeLists.txt": "", "new/x.cc": "", "build-x/o": "", ".venv/p": "",
                         "models/m": "", "q/__pycache__/c.pyc": ""}, """
        FROM debian AS build
        WORKDIR /src
        COPY . .
        """, "build*\n.venv*\nmodels\n**/__pycache__\nDockerfile\n.dockerignore\n")
    assert layout(tmp_path) == ["src/CMakeLists.txt", "src/new/x.cc"]


def test_copy_of_an_excluded_source_fails(tmp_path):
    make_tree(tmp_path, {"data/x": ""}, """
        FROM debian AS build
        COPY data /data
        """, "data\n")
    with pytest.raises(cbc.CheckError, match="not in the build context"):
        layout(tmp_path)


CMAKE = "cmake_minimum_required(VERSION 3.25)\nproject(p NONE)\nadd_subdirectory(a)\nadd_subdirectory(b)\n"


@pytest.mark.parametrize("copies, ok", [
    ("COPY CMakeLists.txt ./\nCOPY a a\n", False),  # the per-directory list that forgot b/
    ("COPY . .\n", True),
])
def test_check_fails_on_a_forgotten_directory(tmp_path, copies, ok):
    make_tree(tmp_path, {"CMakeLists.txt": CMAKE, "a/CMakeLists.txt": "", "b/CMakeLists.txt": ""},
              "FROM debian AS build\nWORKDIR /src\n" + copies +
              "RUN cmake -S . -B build -G Ninja && cmake --build build\n", "build*\n")
    (tmp_path / "Makefile").write_text("CMAKE_FLAGS := -G Ninja\n")
    proc = subprocess.run([sys.executable, cbc.__file__, "--context", str(tmp_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert (proc.returncode == 0) == ok, proc.stdout
    if not ok:
        assert 'add_subdirectory given source "b"' in proc.stdout
