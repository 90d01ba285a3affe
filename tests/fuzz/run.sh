#!/usr/bin/env bash
# Runs the fuzzers of a fuzz build, each for SECONDS, JOBS at a time, starting from its committed
# corpus (tests/fuzz/corpus/NAME) and its dictionary (tests/fuzz/NAME.dict) where it has one.
#
#   tests/fuzz/run.sh BUILD SECONDS JOBS scratch|keep [NAME...]
#
# scratch: the corpus is copied to BUILD/fuzz-runs/NAME/corpus, fresh each run (make fuzz-test:
#          the committed corpus is never written). keep: the fuzzer grows BUILD/corpus/NAME, seeded
#          from the committed corpus, across runs (make fuzz); tests/fuzz/README.md says how to
#          fold what it found back.
# Fails on any crash, leak, undefined behaviour, hang (an input over 10 s), allocation over
# 2 GiB, or a scratch directory a fuzzer left behind; the reproducer and the log stay under
# BUILD/fuzz-runs/NAME.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$(cd "$1" && pwd) seconds=$2 jobs=$3 mode=$4
shift 4
names=("$@")
((${#names[@]})) || names=(gguf safetensors tokenizer hf_dir request)

run_one() {
  local name=$1 run corpus dict=()
  run=$build/fuzz-runs/$name
  rm -rf "$run" "$run.passed"
  mkdir -p "$run/tmp"
  if [[ $mode == scratch ]]; then
    corpus=$run/corpus
  else
    corpus=$build/corpus/$name
  fi
  mkdir -p "$corpus"
  cp tests/fuzz/corpus/"$name"/* "$corpus"/
  [[ -f tests/fuzz/$name.dict ]] && dict=(-dict="tests/fuzz/$name.dict")
  local status=0
  TMPDIR=$run/tmp "$build/bin/${name}_fuzzer" "${dict[@]}" -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$run/" "$corpus" >"$run/log" 2>&1 || status=$?
  if ((status == 0)) && ! rmdir "$run/tmp" 2>/dev/null; then
    echo "fuzz $name: left files in its scratch directory: $(ls -A "$run/tmp" | head -3)" >>"$run/log"
    status=1
  fi
  # One line per fuzzer: executions, speed, coverage (edges) and features reached, corpus size.
  local done_line runs speed
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$run/log" | tail -1 || true)
  runs=$(grep -oE 'stat::number_of_executed_units:[[:space:]]+[0-9]+' "$run/log" | grep -oE '[0-9]+$' || true)
  speed=$(grep -oE 'stat::average_exec_per_sec:[[:space:]]+[0-9]+' "$run/log" | grep -oE '[0-9]+$' || true)
  if ((status == 0)); then
    printf 'fuzz %-12s %3ss %9s runs %7s/s  %s\n' "$name" "$seconds" "${runs:-?}" "${speed:-?}" \
      "$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' <<<"$done_line")"
  else
    echo "fuzz $name FAILED (exit $status); log and reproducer in $run:"
    grep -E 'ERROR|runtime error|what\(\)|SUMMARY|Test unit written|left files' "$run/log" | head -20
  fi
  return "$status"
}

# JOBS fuzzers at a time, each on one core; every failure is reported, then the run fails.
for name in "${names[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
  (run_one "$name" && touch "$build/fuzz-runs/$name.passed") &
done
wait
failed=0
for name in "${names[@]}"; do
  [[ -f $build/fuzz-runs/$name.passed ]] || failed=1
  rm -f "$build/fuzz-runs/$name.passed"
done
exit "$failed"
