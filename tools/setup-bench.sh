#!/usr/bin/env bash
# Idempotent set-up of the second peer: llama.cpp, built once from llama-cpp-python's vendored
# sources with this machine's native flags, serves both llama-cpp-python (the benchmarks and the
# GGUF oracle tests, in its own environment so that nothing it pulls in reaches the oracle's) and
# llama.cpp's own command-line tools. A native build runs only on the CPU it was built for, so
# both are kept per CPU (what -march=native means to the compiler there) in the user's cache
# (.venv-bench and .llama-cpp-tools link to them): a clean clone on the same machine finds them
# built, another CPU builds its own. Also keeps llama.cpp's Python converter (below). Needs
# tools/setup.sh first (compiler, cmake, .venv); one set-up at a time (a lock), so that make
# test's background set-up and a stage that needs it wait for each other.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.3.36
cache=${XDG_CACHE_HOME:-$HOME/.cache}/superweight
mkdir -p "$cache"
exec {lock}>"$cache/setup-bench.lock"
flock "$lock"

# The sdist is fetched at most once a run, and only when something below is missing.
sdist_dir=""
sdist=""
trap '[[ -z $sdist_dir ]] || rm -rf "$sdist_dir"' EXIT
fetch_sdist() {
  if [[ -z $sdist ]]; then
    sdist_dir=$(mktemp -d)
    # --no-binary for this package only: the sdist, without building its build dependencies.
    .venv/bin/pip download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$version" -d "$sdist_dir"
    sdist=$sdist_dir/llama_cpp_python-$version.tar.gz
  fi
}
top=llama_cpp_python-$version/vendor/llama.cpp

# llama.cpp's own Hugging Face -> GGUF converter (convert_hf_to_gguf.py, the conversion package it
# imports, gguf-py, and the chat templates some classes read): pure Python, so one copy in the
# user's cache serves every CPU class (.llama-cpp-convert links to it).
# tools/make_test_model.py runs it with the oracle's environment (.venv) to make GGUF test models
# of new families.
convert_dir=$cache/llama.cpp-convert-$version
if [[ ! -f $convert_dir/.ready ]]; then
  rm -rf "$convert_dir"
  mkdir -p "$convert_dir"
  echo "setup-bench: extracting llama.cpp's converter from llama-cpp-python $version's sdist"
  fetch_sdist
  tar -xzf "$sdist" -C "$convert_dir" \
    --strip-components=3 --wildcards "$top/convert_hf_to_gguf.py" "$top/LICENSE" \
    "$top/conversion/*" "$top/gguf-py/gguf/*" "$top/gguf-py/LICENSE" "$top/models/templates/*"
  touch "$convert_dir/.ready"
fi
if [[ -d .llama-cpp-convert && ! -L .llama-cpp-convert ]]; then rm -rf .llama-cpp-convert; fi
ln -sfn "$convert_dir" .llama-cpp-convert

# What -march=native means to this compiler on this CPU names the build.
cpu=native-$(g++ -march=native -Q --help=target | sha256sum | cut -c1-12)

# One native build of llama.cpp per CPU: its shared libraries (what llama-cpp-python's own build
# would make, with the same options: shared, common library on, no curl) and llama-quantize and
# llama-imatrix, which the recipe tests run as the service prints them and the imatrix oracle
# compares with the engine's matrix. (Building the binding and the tools apart compiled llama.cpp
# twice: about half of a cold set-up.) Its common library as a unity build
# (tools/llama-cpp-common-unity.cmake). A build a killed run left (make test's background
# set-up, stopped with the suite) resumes.
llama_dir=$cache/llama.cpp-$version-$cpu
if [[ ! -f $llama_dir/.ready ]]; then
  mkdir -p "$llama_dir"
  echo "setup-bench: building llama.cpp ($version's) for this CPU ($cpu): its libraries," \
    "llama-quantize and llama-imatrix (native flags; minutes)"
  src=$llama_dir/$top
  if [[ ! -d $src ]]; then  # extracted aside, then moved: never half there
    fetch_sdist
    rm -rf "$llama_dir/extracting"
    mkdir "$llama_dir/extracting"
    tar -xzf "$sdist" -C "$llama_dir/extracting" --exclude=.git "$top"
    mv "$llama_dir/extracting/${top%%/*}" "$llama_dir/"
    rmdir "$llama_dir/extracting"
  fi
  cmake -S "$src" -B "$llama_dir/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DCMAKE_PROJECT_INCLUDE="$PWD/tools/llama-cpp-common-unity.cmake" \
    -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > "$llama_dir/configure.log"
  cmake --build "$llama_dir/build" -j"$(nproc)" --target llama ggml llama-quantize llama-imatrix \
    > "$llama_dir/build.log"
  rm -rf "$llama_dir/${top%%/*}"
  touch "$llama_dir/.ready"
fi
if [[ -d .llama-cpp-tools && ! -L .llama-cpp-tools ]]; then rm -rf .llama-cpp-tools; fi
ln -sfn "$llama_dir/build/bin" .llama-cpp-tools

# llama-cpp-python's Python package without a build of its own (LLAMA_BUILD=OFF), its library
# folder linked to the libraries above: Debian's python3 with its numpy (the binding's only
# numeric dependency).
env_dir=$cache/venv-llama-cpp-python-$version-$cpu
if [[ ! -f $env_dir/.ready ]]; then
  rm -rf "$env_dir"
  /usr/bin/python3 -m venv --system-site-packages "$env_dir"
  echo "setup-bench: installing llama-cpp-python $version over that build"
  # No wheel cache: a wheel from another configuration would be taken for this one.
  CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" \
    "$env_dir/bin/pip" install -q --no-cache-dir --disable-pip-version-check --no-deps \
    --no-binary llama-cpp-python "llama-cpp-python==$version" diskcache jinja2 markupsafe \
    typing-extensions
  package=$("$env_dir/bin/python" -c \
    'import importlib.util; print(importlib.util.find_spec("llama_cpp").submodule_search_locations[0])')
  mkdir -p "$package/lib"
  for lib in llama ggml ggml-base ggml-cpu; do
    ln -sfn "$llama_dir/build/bin/lib$lib.so" "$package/lib/lib$lib.so"
  done
  "$env_dir/bin/python" -c 'import llama_cpp; print("setup-bench: llama.cpp", llama_cpp.llama_print_system_info().decode()[:60], "...")'
  touch "$env_dir/.ready"
fi
if [[ -d .venv-bench && ! -L .venv-bench ]]; then rm -rf .venv-bench; fi
ln -sfn "$env_dir" .venv-bench
