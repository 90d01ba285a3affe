#!/usr/bin/env bash
# make test: each stage (a make target) in turn, stopping at the first that fails, then a table of
# the stages' wall times, so that a stage growing past its share of the suite's budget shows in
# every CI log.
#
# The two third-party set-ups that take minutes on a new machine (llama.cpp's native build, Helm
# from the Go module proxy) start at once in the background at the lowest priority, so that
# they use what the stages leave of the CPU (the oracle and end-to-end tests use about one core
# of two); the stages that need them come last and wait for them (each set-up holds a lock).
# Where they are cached, the background finds them so in a second.
#
#   tools/test-stages.sh STAGE...
set -uo pipefail
cd "$(dirname "$0")/.."
make=${MAKE:-make}
names=() seconds=() status=0 suite_start=$(date +%s)
rm -f build*/ccache-stats.log  # each build folder's compiler-cache log (CMakeLists.txt), this run's

tools/setup.sh || exit 1  # what the background set-up needs (.venv, compilers)
names+=(setup) seconds+=($(($(date +%s) - suite_start)))
echo "== tools/setup.sh: ${seconds[-1]} s"
mkdir -p build
background_log=build/background-setup.log
# Its own session (so that its process group can be stopped with the suite) is also its own
# scheduler autogroup where the kernel groups by session, which would share the CPU equally with
# the stages whatever the niceness: the autogroup is niced too.
setsid nice -n 19 bash -c 'start=$(date +%s)
  echo 19 2>/dev/null >/proc/self/autogroup || true
  tools/setup-bench.sh && tools/chart-test.sh --helm-only
  echo "background set-up (llama.cpp, Helm): exit $?, $(($(date +%s) - start)) s"' \
  >"$background_log" 2>&1 &
background=$!
echo "== background set-up of llama.cpp and Helm (pid $background, log $background_log)"
trap 'kill -- -"$background" 2>/dev/null' EXIT
for stage in "$@"; do
  start=$(date +%s)
  $make --no-print-directory "$stage"
  status=$?
  names+=("$stage") seconds+=($(($(date +%s) - start)))
  echo "== make $stage: ${seconds[-1]} s"
  ((status == 0)) || break
done
total=$(($(date +%s) - suite_start))
echo
cpu=$(build/bin/superweight-engine cpu 2>/dev/null)
active=$(grep -oE '"active":"[a-z0-9_]+"' <<<"$cpu" | cut -d'"' -f4)
detected=$(grep -oE '"detected":"[a-z0-9_]+"' <<<"$cpu" | cut -d'"' -f4)
[[ $active == "$detected" ]] || active+=" (capped; the CPU's: $detected)"
echo "== make test: stage times (CPU class ${active:-unknown}, $(nproc) cores)"
for i in "${!names[@]}"; do
  printf '   %-22s %5d s  %3d%%\n' "${names[i]}" "${seconds[i]}" $((100 * seconds[i] / (total > 0 ? total : 1)))
done
printf '   %-22s %5d s  (%dm%02ds)%s\n' total "$total" $((total / 60)) $((total % 60)) \
  "$( ((status == 0)) || echo ", stopped at ${names[-1]}")"
grep -h '^background set-up' "$background_log" | sed 's/^/   /'
# What the compiler cache served: a clean clone on a machine that built these sources before
# compiles only what changed.
for log in build*/ccache-stats.log; do
  [[ -f $log ]] || continue
  printf '   compiler cache, %-12s %4d of %4d compiles served\n' "${log%%/*}:" \
    "$(grep -cE '^(direct|preprocessed)_cache_hit$' "$log")" "$(grep -c '^# ' "$log")"
done
exit "$status"
