#!/usr/bin/env bash
# Idempotent set-up of the second peer: llama.cpp through llama-cpp-python, built from source with
# this machine's native flags, in its own environment so that nothing it pulls in reaches the
# oracle's. The benchmarks and the GGUF oracle tests use it. A native build runs only on the CPU
# class it was built for, so the environment is kept per class in the user's cache
# (.venv-bench links to it): a clean clone on the same machine finds it built, another class
# builds its own. Also keeps llama.cpp's Python converter (below). Needs tools/setup.sh and the
# build first (compiler, cmake, superweight-engine).
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.3.36

# llama.cpp's own Hugging Face -> GGUF converter (convert_hf_to_gguf.py, the conversion package it
# imports, gguf-py, and the chat templates some classes read), from the same llama-cpp-python
# sdist: pure Python, so one copy in the user's cache serves every CPU class
# (.llama-cpp-convert links to it). tools/make_test_model.py runs it with the oracle's
# environment (.venv) to make GGUF test models of new families.
convert_dir=${XDG_CACHE_HOME:-$HOME/.cache}/superweight/llama.cpp-convert-$version
if [[ ! -f $convert_dir/.ready ]]; then
  rm -rf "$convert_dir"
  mkdir -p "$convert_dir"
  sdist_dir=$(mktemp -d)
  trap 'rm -rf "$sdist_dir"' EXIT
  echo "setup-bench: extracting llama.cpp's converter from llama-cpp-python $version's sdist"
  # --no-binary for this package only: the sdist, without building its build dependencies.
  .venv/bin/pip download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$version" -d "$sdist_dir"
  top=llama_cpp_python-$version/vendor/llama.cpp
  tar -xzf "$sdist_dir/llama_cpp_python-$version.tar.gz" -C "$convert_dir" \
    --strip-components=3 --wildcards "$top/convert_hf_to_gguf.py" "$top/LICENSE" \
    "$top/conversion/*" "$top/gguf-py/gguf/*" "$top/gguf-py/LICENSE" "$top/models/templates/*"
  rm -rf "$sdist_dir"
  trap - EXIT
  touch "$convert_dir/.ready"
fi
if [[ -d .llama-cpp-convert && ! -L .llama-cpp-convert ]]; then rm -rf .llama-cpp-convert; fi
ln -sfn "$convert_dir" .llama-cpp-convert

class=$(build/bin/superweight-engine cpu | /usr/bin/python3 -c \
  'import json, sys; print(json.load(sys.stdin)["detected"])')
env_dir=${XDG_CACHE_HOME:-$HOME/.cache}/superweight/venv-bench-$version-$class
if [[ ! -f $env_dir/.ready ]]; then
  rm -rf "$env_dir"
  mkdir -p "$(dirname "$env_dir")"
  # Debian's python3 with its numpy (llama-cpp-python's only numeric dependency).
  /usr/bin/python3 -m venv --system-site-packages "$env_dir"
  echo "setup-bench: building llama-cpp-python $version for CPU class $class (llama.cpp from" \
    "source, native flags; minutes)"
  # No wheel cache: a wheel built natively for another class would be taken for this one.
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) CMAKE_ARGS="-DGGML_NATIVE=ON" \
    "$env_dir/bin/pip" install -q --no-cache-dir --disable-pip-version-check --no-deps \
    --no-binary llama-cpp-python "llama-cpp-python==$version" diskcache jinja2 markupsafe \
    typing-extensions
  touch "$env_dir/.ready"
fi
if [[ -d .venv-bench && ! -L .venv-bench ]]; then rm -rf .venv-bench; fi
ln -sfn "$env_dir" .venv-bench

# llama.cpp's own command-line quantizer and importance-matrix tool (llama-quantize,
# llama-imatrix) from the same sdist's sources, built natively per CPU class beside the
# environment (.llama-cpp-tools links to their bin/): the recipe tests run the command lines the
# service prints with them, and the imatrix oracle compares the engine's matrix with theirs.
tools_dir=${XDG_CACHE_HOME:-$HOME/.cache}/superweight/llama.cpp-tools-$version-$class
if [[ ! -f $tools_dir/.ready ]]; then
  rm -rf "$tools_dir"
  mkdir -p "$tools_dir"
  src_dir=$(mktemp -d)
  trap 'rm -rf "$src_dir"' EXIT
  echo "setup-bench: building llama-quantize and llama-imatrix ($version's llama.cpp) for CPU" \
    "class $class (minutes)"
  .venv/bin/pip download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$version" -d "$src_dir"
  tar -xzf "$src_dir/llama_cpp_python-$version.tar.gz" -C "$src_dir" --strip-components=3 \
    --exclude=.git \
    "llama_cpp_python-$version/vendor/llama.cpp"
  cmake -S "$src_dir" -B "$tools_dir/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > "$tools_dir/configure.log"
  cmake --build "$tools_dir/build" -j"$(nproc)" --target llama-quantize llama-imatrix \
    > "$tools_dir/build.log"
  rm -rf "$src_dir"
  trap - EXIT
  touch "$tools_dir/.ready"
fi
if [[ -d .llama-cpp-tools && ! -L .llama-cpp-tools ]]; then rm -rf .llama-cpp-tools; fi
ln -sfn "$tools_dir/build/bin" .llama-cpp-tools
