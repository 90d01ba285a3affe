#!/usr/bin/env bash
# The main job: superweightd on the default model, and a client run that locates its super
# weights (the per-layer profile goes to build/demo-profile.svg).
set -euo pipefail
cd "$(dirname "$0")/.."
port=${SUPERWEIGHT_DEMO_PORT:-50051}
log=build/demo-server.log
build/bin/superweightd --listen=127.0.0.1:$port --model_root=models \
  --confirm_text_file=testdata/text/wiki.test.raw --state_dir=build/demo-state >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  build/bin/superweight --server=127.0.0.1:$port --timeout=1 health >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.2
done
echo "== models under models/"
build/bin/superweight --server=127.0.0.1:$port models
echo
echo "== locate: SmolLM2-135M-Instruct (paper's prompt, threshold 50, confirmed on WikiText-2)"
build/bin/superweight --server=127.0.0.1:$port locate --model=SmolLM2-135M-Instruct.Q4_1.gguf \
  --plot=build/demo-profile.svg
echo "(per-layer profile: build/demo-profile.svg)"
echo
echo "== ablate: what SmolLM2 loses without it (WikiText-2, LAMBADA, next-token probabilities)"
build/bin/superweight --server=127.0.0.1:$port ablate --model=SmolLM2-135M-Instruct.Q4_1.gguf \
  --settings=prune,restore_sa,token_probs --tasks=wikitext2,lambada --max_examples=200 \
  --max_windows=8 --token_prob_contexts=200
