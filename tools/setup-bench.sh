#!/usr/bin/env bash
# Idempotent set-up of the benchmark's second peer: llama.cpp through llama-cpp-python, built from
# source with this machine's native flags, in its own environment (.venv-bench) so that nothing
# it pulls in reaches the test suite's. Needs tools/setup.sh first (compiler, cmake).
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.3.36
stamp=.venv-bench/.llama-cpp-python-$version
if [[ -f $stamp ]]; then exit 0; fi
if [[ ! -x .venv-bench/bin/python ]]; then
  # Debian's python3 with its numpy (llama-cpp-python's only numeric dependency).
  /usr/bin/python3 -m venv --system-site-packages .venv-bench
fi
echo "setup-bench: building llama-cpp-python $version (llama.cpp from source, native flags; minutes)"
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) CMAKE_ARGS="-DGGML_NATIVE=ON" \
  .venv-bench/bin/pip install -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
  "llama-cpp-python==$version" diskcache jinja2 markupsafe typing-extensions
touch "$stamp"
