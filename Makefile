# The README's entry points. Each target does its own set-up (tools/setup.sh is idempotent).
JOBS ?= $(shell nproc)
BUILD := build
ASAN_BUILD := build-asan
CMAKE_FLAGS := -G Ninja -DCMAKE_BUILD_TYPE=Release

# The Helm chart (deploy/helm/superweight): lint, render, the manifests validated against the
# Kubernetes schemas offline, and its unit tests (tests/chart). Helm is built from the Go module
# proxy once and cached.
chart-test: setup
	@tools/chart-test.sh

.PHONY: dist chart-test docker-test docker-context-test fuzz fuzz-build fuzz-test format-check setup build build-asan test unit-test asan-test oracle-test e2e-test llama-cpp-test lesser-cpu-test demo bench format clean

setup:
	@tools/setup.sh

build: setup
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The engine's and the server's unit tests again under AddressSanitizer and
# UndefinedBehaviorSanitizer, and the libFuzzer targets (fuzz-build), in one tree built with
# clang 14 (the fuzzers' compiler and OpenMP runtime): the engine compiled once for both, its
# sanitized build and tests in under half of GCC's time; the GCC build's own tests are
# unit-test's. Line tables are all a report needs (a fifth less build time than full debug
# information); assertions on. A build folder another compiler configured is started afresh
# (CMake would drop the other settings with its cache).
build-asan: setup
	@tools/setup.sh --fuzz
	@grep -qs 'CMAKE_CXX_COMPILER:.*clang++-14' $(ASAN_BUILD)/CMakeCache.txt || rm -rf $(ASAN_BUILD)
	@cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only" \
	  -DSUPERWEIGHT_SANITIZE=ON -DSUPERWEIGHT_FUZZ=ON -DSUPERWEIGHT_UNIT_TESTS_ONLY=OFF >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

unit-test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

asan-test: build-asan
	@cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS)

# The Python suites run a file at a time on each of up to four workers (pytest-xdist; a file's
# fixtures stay in its worker), the cores shared out among them (OMP_NUM_THREADS: the engine,
# the server, torch and llama.cpp): a test waits on servers, subprocesses and timers for about a
# third of its time, which another worker fills (2 cores: e2e 637 s on one worker, 412 s on two).
TEST_WORKERS := $(shell n=$(JOBS); echo $$((n < 4 ? n : 4)))
PYTEST := OMP_NUM_THREADS=$(shell echo $$(($(JOBS) / $(TEST_WORKERS)))) .venv/bin/python -m pytest \
  -q -n $(TEST_WORKERS) --dist loadfile

# The oracle and end-to-end tests that need llama.cpp (marked llama_cpp: its native build, its
# tools, its converter) are llama-cpp-test's, after the others, so that make test's background
# set-up of llama.cpp (tools/test-stages.sh) has them to overlap.
oracle-test: build
	@$(PYTEST) --durations=12 -m 'not llama_cpp' tests/oracle

# The real server on loopback, driven by the real client.
e2e-test: build
	@$(PYTEST) --durations=12 -m 'not llama_cpp' tests/e2e

llama-cpp-test: build
	@tools/setup-bench.sh
	@$(PYTEST) --durations=8 -m llama_cpp tests/oracle
	@$(PYTEST) --durations=8 -m llama_cpp tests/e2e

# libFuzzer on what reads untrusted input (clang 14, ASan+UBSan, built by build-asan;
# tests/fuzz/README.md): the GGUF, safetensors and tokenizer readers, a Hugging Face directory
# as the server opens one, and requests through the service's checks. fuzz-test runs each for
# FUZZ_TEST_SECONDS from its committed corpus, as part of make test; fuzz runs each for
# FUZZ_SECONDS and keeps what it finds in build-asan/corpus.
FUZZ_BUILD := $(ASAN_BUILD)
FUZZ_SECONDS ?= 60
FUZZ_TEST_SECONDS ?= 20
fuzz-build: build-asan

fuzz-test: fuzz-build
	@tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_TEST_SECONDS) $(JOBS) scratch

fuzz: fuzz-build
	@tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(JOBS) keep

format-check: setup
	@clang-format --dry-run -Werror $$(git ls-files '*.cc' '*.h')

# The unit suite and the oracle tests of class-dependent code (marked isa) again with the engine
# capped (SUPERWEIGHT_MAX_ISA) at each CPU class below this machine's, so that one machine checks
# the paths of lesser ones; the sanitizers at the lowest (avx2). tests/e2e/test_cpu_classes.py runs the service capped.
lesser-cpu-test: build build-asan
	@for isa in $$(build/bin/superweight-engine cpu | .venv/bin/python -c \
	    'import json, sys; print(" ".join(json.load(sys.stdin)["below"]))'); do \
	  echo "== SUPERWEIGHT_MAX_ISA=$$isa"; \
	  (cd $(BUILD) && SUPERWEIGHT_MAX_ISA=$$isa ctest --output-on-failure -j $(JOBS)) || exit 1; \
	  if [ $$isa = avx2 ]; then \
	    (cd $(ASAN_BUILD) && SUPERWEIGHT_MAX_ISA=$$isa ctest --output-on-failure -j $(JOBS)) || exit 1; \
	  fi; \
	  tools/setup-bench.sh || exit 1; \
	  SUPERWEIGHT_MAX_ISA=$$isa .venv/bin/python -m pytest -q -m isa tests/oracle || exit 1; \
	done

# Each stage in turn, then a table of their wall times (the suite's budget is watched per stage).
# Meanwhile llama.cpp and Helm are set up in the background, at the lowest priority, if they are
# not cached yet: their stages come last (tools/test-stages.sh).
TEST_STAGES := format-check docker-context-test unit-test asan-test fuzz-test oracle-test e2e-test \
  llama-cpp-test chart-test lesser-cpu-test
test:
	@MAKE="$(MAKE)" tools/test-stages.sh $(TEST_STAGES)

# The release's products in dist/ with their checksums (tools/dist.sh): the Debian package of the
# binaries, the Python wheel and sdist, the source tarball.
dist: build
	@tools/dist.sh dist

demo: build
	@tools/demo.sh

bench: build
	@tools/setup-bench.sh
	@.venv/bin/python bench/score_throughput.py
	@build/bin/superweight-bench-dequantize
	@.venv/bin/python bench/service_concurrency.py
	@.venv/bin/python bench/ablate_bench.py
	@.venv/bin/python bench/quantize_bench.py
	@.venv/bin/python bench/tokenizer_bench.py
	@.venv/bin/python bench/soak_bench.py
	@.venv/bin/python bench/scaleout_bench.py

# The image's build stage without a Docker engine (in make test): lays out in a scratch
# directory what the Dockerfile's COPY lines and .dockerignore give it, and runs its CMake
# configure there (and Ninja's dry run of its build), so a layout the image cannot build fails.
docker-context-test: setup
	@.venv/bin/python -m pytest -q tests/docker
	@.venv/bin/python tests/docker/check_build_context.py

# The image and deploy/docker-compose.yml, for real (installs and starts a Docker engine if
# none runs; deploy/smoke_test.sh).
docker-test: setup
	@deploy/smoke_test.sh

format:
	@clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
