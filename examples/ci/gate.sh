#!/usr/bin/env bash
# The CI gate, shell form: fails the pipeline (exit 3) when a quantized model lost the super
# weights of the model it was made from. The pipeline's service container runs superweightd with
# the model root mounted; MODEL and REFERENCE are names under that root.
#
#   SUPERWEIGHT_SERVER=host:port SUPERWEIGHT_TOKEN_FILE=token MODEL=q4.gguf REFERENCE=f16.gguf \
#     examples/ci/gate.sh
#
# Exit codes are the client's: 0 kept, 3 lost (or perplexity past the bound), 1 the server
# refused or failed, 2 usage.
set -euo pipefail
for variable in SUPERWEIGHT_SERVER MODEL REFERENCE; do
  [[ -n ${!variable:-} ]] || { echo "gate.sh: set $variable (see the top of this file)" >&2; exit 2; }
done
superweight=${SUPERWEIGHT_CLIENT:-superweight}
args=(--server="$SUPERWEIGHT_SERVER" check --model="$MODEL" --reference="$REFERENCE")
[[ -n ${SUPERWEIGHT_TOKEN_FILE:-} ]] && args+=(--token_file="$SUPERWEIGHT_TOKEN_FILE")
# Optional: the super weights to check (LAYER,ROW,COL; space-separated) instead of locating them
# in REFERENCE, a shorter perplexity check, and the perplexity ratio allowed (default 1.1).
for coordinate in ${SUPER_WEIGHTS:-}; do args+=(--super_weights="$coordinate"); done
[[ -n ${MAX_WINDOWS:-} ]] && args+=(--max_windows="$MAX_WINDOWS")
[[ -n ${WINDOW:-} ]] && args+=(--window="$WINDOW")
[[ -n ${MAX_PPL_RATIO:-} ]] && args+=(--max_ppl_ratio="$MAX_PPL_RATIO")  # model / reference
exec "$superweight" "${args[@]}"
