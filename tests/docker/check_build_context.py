#!/usr/bin/env python3
"""The Docker image's build stage, without a Docker engine (make docker-context-test).

Reads the Dockerfile and .dockerignore, lays out in a scratch directory exactly the files the
build stage's COPY/ADD lines would put in the image (from the context that .dockerignore
admits), then runs that stage's CMake configure there with the Dockerfile's own options, and
Ninja's dry run of its build (every input of the targets it builds present or generated). A
source layout the image cannot build therefore fails `make test`, with no engine. Every other
stage's COPY from the context is checked too (its sources present after .dockerignore).

.dockerignore is read with Docker's rules (moby/patternmatcher, as the classic builder and
BuildKit apply them): a line is a pattern relative to the context root (a leading / is
dropped, the path is cleaned), `*` and `?` stay within one path element, `**` spans any number
of them (none included), `!` re-admits what an earlier pattern excluded, the last pattern that
matches a path decides, and a pattern that matches a directory excludes everything under it.
Standard library only.
"""
import argparse
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


class CheckError(Exception):
    """What the image's build would fail on (or what this check cannot interpret)."""


# --- .dockerignore -------------------------------------------------------------------------


def read_dockerignore(text):
    """The patterns of a .dockerignore, as moby/patternmatcher's ReadAll normalizes them."""
    patterns = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = posixpath.normpath(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append(("!" if invert else "") + pattern)
    return patterns


def _pattern_regex(pattern):
    """A pattern as the regular expression patternmatcher compiles it to (anchored both ends)."""
    out = "^"
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":  # "**/" is "**"
                    i += 1
                if i >= n:
                    out += ".*"  # a trailing "**" takes everything below
                    continue
                out += "(.*/)?"  # any number of path elements, none included
                continue
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\":
            i += 1
            out += re.escape(pattern[i]) if i < n else "\\\\"
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise CheckError(f".dockerignore: unterminated [ in {pattern!r}")
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


class DockerIgnore:
    def __init__(self, patterns):
        self.patterns = []
        for p in patterns:
            exclusion = p.startswith("!")
            body = p[1:] if exclusion else p
            if body:
                self.patterns.append((exclusion, _pattern_regex(body)))
        self.has_exceptions = any(e for e, _ in self.patterns)

    def excluded(self, path):
        """Whether a context path (relative, with /) is kept out, or a directory above it is
        (patternmatcher's MatchesOrParentMatches: the last pattern that matches decides)."""
        path = posixpath.normpath(path)
        parents = posixpath.dirname(path).split("/") if "/" in path else []
        matched = False
        for exclusion, regex in self.patterns:
            if exclusion != matched:
                continue  # an inclusion already matched, or nothing to re-admit yet
            match = bool(regex.match(path))
            if not match:
                for i in range(len(parents)):
                    if regex.match("/".join(parents[: i + 1])):
                        match = True
                        break
            if match:
                matched = not exclusion
        return matched


def context_files(context, ignore):
    """The context as the builder receives it: {relative path: 'dir' | 'file' | 'link'}."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(context):
        rel_dir = os.path.relpath(dirpath, context)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        kept = []
        for d in sorted(dirnames):
            rel = posixpath.join(rel_dir, d) if rel_dir else d
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                if not ignore.excluded(rel):
                    entries[rel] = "link"
                continue
            # A kept-out directory is walked only if a ! pattern could re-admit something in it.
            if ignore.excluded(rel) and not ignore.has_exceptions:
                continue
            if not ignore.excluded(rel):
                entries[rel] = "dir"
            kept.append(d)
        dirnames[:] = kept
        for f in sorted(filenames):
            rel = posixpath.join(rel_dir, f) if rel_dir else f
            if not ignore.excluded(rel):
                entries[rel] = "link" if os.path.islink(os.path.join(dirpath, f)) else "file"
    # A file re-admitted under a kept-out directory brings its directories with it.
    for rel in list(entries):
        parent = posixpath.dirname(rel)
        while parent and parent not in entries:
            entries[parent] = "dir"
            parent = posixpath.dirname(parent)
    return entries


# --- Dockerfile ----------------------------------------------------------------------------


def dockerfile_instructions(text):
    """(line number, INSTRUCTION, arguments) in order: comments dropped, continuations joined."""
    escape = "\\"
    lines = text.splitlines()
    # Parser directives (only `escape` changes how the rest is read).
    for line in lines:
        m = re.match(r"^\s*#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$", line)
        if not m:
            break
        if m.group(1).lower() == "escape":
            escape = m.group(2)
    out, buf, start = [], "", None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and buf):
            continue  # comments, and blank lines inside a continuation, are dropped
        if not stripped:
            continue
        if start is None:
            start = number
        body = line.rstrip()
        if body.endswith(escape):
            buf += body[: -len(escape)] + " "
            continue
        buf += body
        word, _, rest = buf.strip().partition(" ")
        if rest.lstrip().startswith("<<") and word.upper() in ("RUN", "COPY", "ADD"):
            raise CheckError(f"Dockerfile:{start}: heredocs are not interpreted by this check")
        out.append((start, word.upper(), rest.strip()))
        buf, start = "", None
    if buf:
        raise CheckError("Dockerfile: ends inside a line continuation")
    return out


def _substitute(text, variables):
    def value(m):
        name = m.group(1) or m.group(2)
        modifier, word = m.group(3), m.group(4)
        v = variables.get(name, "")
        if modifier == ":-":
            return v or word
        if modifier == ":+":
            return word if v else ""
        return v

    return re.sub(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])([^}]*))?\})",
                  value, text)


def _split_args(rest):
    """A COPY/ADD line's flags and paths (JSON or shell-like form)."""
    flags = []
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.strip()
    if rest.startswith("["):
        args = json.loads(rest)
    else:
        args = rest.split()
    return flags, args


class Stage:
    def __init__(self, index, image, name):
        self.index, self.image, self.name = index, image, name
        self.steps = []  # ("workdir", path) | ("copy", line, flags, sources, dest) | ("run", line, cmd)


def dockerfile_stages(text):
    stages, variables = [], {}
    for line, word, rest in dockerfile_instructions(text):
        if word == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(len(stages), parts[0], name))
            variables = {}
            continue
        if word == "ARG" and not stages:
            continue  # global ARGs before the first FROM
        if not stages:
            raise CheckError(f"Dockerfile:{line}: {word} before FROM")
        stage = stages[-1]
        if word in ("ARG", "ENV"):
            for part in shlex.split(rest):
                name, eq, val = part.partition("=")
                if eq:
                    variables[name] = _substitute(val, variables)
                elif word == "ARG":
                    variables.setdefault(name, "")
            continue
        if word == "WORKDIR":
            stage.steps.append(("workdir", _substitute(rest, variables)))
        elif word in ("COPY", "ADD"):
            flags, args = _split_args(rest)
            args = [_substitute(a, variables) for a in args]
            if len(args) < 2:
                raise CheckError(f"Dockerfile:{line}: {word} needs a source and a destination")
            stage.steps.append(("copy", line, flags, args[:-1], args[-1]))
        elif word == "RUN":
            stage.steps.append(("run", line, rest))
    return stages


def build_stage(stages, name=None):
    """The stage named `name`, else the one whose RUN configures a CMake project."""
    if name:
        for s in stages:
            if s.name == name:
                return s
        raise CheckError(f"Dockerfile: no stage named {name!r}")
    found = [s for s in stages if cmake_commands(s)[0]]
    if len(found) != 1:
        raise CheckError(f"Dockerfile: {len(found)} stages configure a CMake project, not 1")
    return found[0]


def cmake_commands(stage):
    """The stage's CMake configure and build commands (from its RUN lines) and their WORKDIR."""
    configure, build, workdir, cwd = [], [], "/", "/"
    for step in stage.steps:
        if step[0] == "workdir":
            cwd = posixpath.normpath(posixpath.join(cwd, step[1]))
        elif step[0] == "run":
            for part in re.split(r"&&|;|\|\|", step[2]):
                words = shlex.split(part)
                if not words or words[0] != "cmake":
                    continue
                (build if "--build" in words else configure).append(words)
                workdir = cwd
    return configure, build, workdir


# --- the stage's file system ---------------------------------------------------------------


def _glob(entries, pattern):
    """Context paths matching a COPY source (Go's filepath.Match, element by element)."""
    pattern = posixpath.normpath(pattern.lstrip("/")) if pattern.strip("/") else "."
    if pattern == ".":
        return ["."]
    if not any(c in pattern for c in "*?["):
        return [pattern] if pattern in entries else []
    regex = _pattern_regex(pattern.replace("**", "*"))  # Go's filepath.Match: no "**"
    return sorted(p for p in entries if regex.match(p))


def _put(context, rel, kind, target):
    src = os.path.join(context, rel)
    if kind == "dir":
        os.makedirs(target, exist_ok=True)
    elif kind == "link":
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.lexists(target):
            os.remove(target)
        os.symlink(os.readlink(src), target)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(src, target)


def lay_out(stage, context, entries, rootfs):
    """Copies into rootfs what the stage's COPY/ADD lines from the context put in the image.
    Returns the context paths it took (top-level elements) and the number of files."""
    cwd, taken, files = "/", set(), 0
    for step in stage.steps:
        if step[0] == "workdir":
            cwd = posixpath.normpath(posixpath.join(cwd, step[1]))
            os.makedirs(rootfs + cwd, exist_ok=True)
            continue
        if step[0] != "copy":
            continue
        _, line, flags, sources, dest = step
        if any(f.startswith("--from") for f in flags):
            continue  # from another stage or image, not from the context
        unknown = [f for f in flags if not re.match(r"--(chown|chmod|link)(=|$)", f)]
        if unknown:
            raise CheckError(f"Dockerfile:{line}: COPY flags not interpreted: {unknown}")
        dest_abs = posixpath.normpath(posixpath.join(cwd, dest))
        matches = []
        for src in sources:
            found = _glob(entries, src)
            if not found:
                raise CheckError(
                    f"Dockerfile:{line}: COPY source {src!r} is not in the build context "
                    "(missing, or kept out by .dockerignore)")
            matches += found
        into_dir = dest.endswith("/") or dest in (".", "./") or len(matches) > 1 or \
            os.path.isdir(rootfs + dest_abs)
        for src in matches:
            taken.add(src.split("/")[0] if src != "." else ".")
            kind = "dir" if src == "." else entries[src]
            if kind == "dir":
                prefix = "" if src == "." else src + "/"
                os.makedirs(rootfs + dest_abs, exist_ok=True)
                for rel, k in entries.items():
                    if rel.startswith(prefix):
                        _put(context, rel, k, rootfs + posixpath.join(dest_abs, rel[len(prefix):]))
                        files += k != "dir"
            else:
                target = posixpath.join(dest_abs, posixpath.basename(src)) if into_dir else dest_abs
                _put(context, src, kind, rootfs + target)
                files += 1
    return taken, files


def check_other_stages(stages, build, entries):
    """Every other stage's COPY from the context names something the context has."""
    for stage in stages:
        if stage is build:
            continue
        for step in stage.steps:
            if step[0] == "copy" and not any(f.startswith("--from") for f in step[2]):
                for src in step[3]:
                    if not _glob(entries, src):
                        raise CheckError(
                            f"Dockerfile:{step[1]}: COPY source {src!r} is not in the build "
                            "context (missing, or kept out by .dockerignore)")


def makefile_cmake_flags(path):
    """The words of the Makefile's `CMAKE_FLAGS := ...` (none if it has no such line)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        for line in f:
            m = re.match(r"^CMAKE_FLAGS\s*:?=\s*(.*)$", line.rstrip("\n"))
            if m:
                return shlex.split(m.group(1))
    return []


def _run(words, cwd, log):
    t = time.monotonic()
    proc = subprocess.run(words, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(words)}\n{proc.stdout}\n")
    return proc, time.monotonic() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--context", default=ROOT, help="the build context (default: the repository)")
    ap.add_argument("--dockerfile", help="default: CONTEXT/Dockerfile")
    ap.add_argument("--dockerignore", help="default: CONTEXT/.dockerignore (none if absent)")
    ap.add_argument("--makefile", help="default: CONTEXT/Makefile, whose CMAKE_FLAGS (make build's "
                    "options) the configure must pass")
    ap.add_argument("--stage", help="the build stage's name (default: the one running cmake)")
    ap.add_argument("--keep", help="lay out in this directory and keep it (default: a temporary one)")
    ap.add_argument("--no-configure", action="store_true", help="lay out and check COPY lines only")
    args = ap.parse_args(argv)
    context = os.path.abspath(args.context)
    dockerfile = args.dockerfile or os.path.join(context, "Dockerfile")
    dockerignore = args.dockerignore or os.path.join(context, ".dockerignore")
    makefile = args.makefile or os.path.join(context, "Makefile")
    t0 = time.monotonic()
    scratch = os.path.abspath(args.keep) if args.keep else tempfile.mkdtemp(prefix="docker-context-")
    try:
        with open(dockerfile) as f:
            stages = dockerfile_stages(f.read())
        patterns = []
        if os.path.exists(dockerignore):
            with open(dockerignore) as f:
                patterns = read_dockerignore(f.read())
        entries = context_files(context, DockerIgnore(patterns))
        stage = build_stage(stages, args.stage)
        configure, build, workdir = cmake_commands(stage)
        if args.keep and os.path.exists(scratch):
            shutil.rmtree(scratch)
        rootfs = os.path.join(scratch, "rootfs")
        os.makedirs(rootfs)
        taken, files = lay_out(stage, context, entries, rootfs)
        check_other_stages(stages, stage, entries)
        top = sorted({p.split("/")[0] for p in entries})
        left = [t for t in top if "." not in taken and t not in taken]
        print(f"build stage (FROM {stage.image}{' AS ' + stage.name if stage.name else ''}): "
              f"{files} files from the context ({len(entries)} entries admitted by .dockerignore)"
              f"{'; not copied: ' + ', '.join(left) if left else ''}")
        if args.no_configure:
            return 0
        if not configure:
            raise CheckError("Dockerfile: the build stage runs no cmake configure")
        flags = makefile_cmake_flags(makefile)
        for words in configure:
            missing = [f for f in flags if f not in words[1:]]
            if missing:
                raise CheckError(f"the build stage's configure lacks make build's options {missing} "
                                 f"(Makefile CMAKE_FLAGS): {shlex.join(words)}")
        cwd = rootfs + workdir
        log = os.path.join(scratch, "cmake.log")
        for words in configure:
            proc, secs = _run(words, cwd, log)
            print(f"  {shlex.join(words)}  (in {workdir}): exit {proc.returncode}, {secs:.1f} s")
            if proc.returncode:
                sys.stdout.write(proc.stdout[-6000:])
                raise CheckError("the build stage's cmake configure fails on what it copies")
        for words in build:
            # Ninja's dry run: every input of the targets present or produced by a rule.
            dry = words + (["--"] if "--" not in words else []) + ["-n"]
            proc, secs = _run(dry, cwd, log)
            steps = sum(1 for l in proc.stdout.splitlines() if l.startswith("["))
            print(f"  {shlex.join(dry)}: exit {proc.returncode}, {steps} steps, {secs:.1f} s")
            if proc.returncode:
                sys.stdout.write(proc.stdout[-6000:])
                raise CheckError("the build stage's targets cannot be built from what it copies")
        print(f"docker-context-test passed in {time.monotonic() - t0:.1f} s")
        return 0
    except CheckError as e:
        sys.stdout.flush()
        hint = "" if args.keep else " (--keep DIR keeps the laid-out stage to look at)"
        print(f"docker-context-test FAILED: {e}{hint}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
