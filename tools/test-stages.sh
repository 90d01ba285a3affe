#!/usr/bin/env bash
# make test: each stage (a make target) in turn, stopping at the first that fails, then a table of
# the stages' wall times, so that a stage growing past its share of the suite's budget shows in
# every CI log.
#
#   tools/test-stages.sh STAGE...
set -uo pipefail
cd "$(dirname "$0")/.."
make=${MAKE:-make}
names=() seconds=() status=0 suite_start=$(date +%s)
rm -f build*/ccache-stats.log  # each build folder's compiler-cache log (CMakeLists.txt), this run's
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
# What the compiler cache served: a clean clone on a machine that built these sources before
# compiles only what changed.
for log in build*/ccache-stats.log; do
  [[ -f $log ]] || continue
  printf '   compiler cache, %-12s %4d of %4d compiles served\n' "${log%%/*}:" \
    "$(grep -cE '^(direct|preprocessed)_cache_hit$' "$log")" "$(grep -c '^# ' "$log")"
done
exit "$status"
