#!/usr/bin/env bash
# The main job: superweightd on the default model, and client runs that locate its super weights
# (the per-layer profile goes to build/demo-profile.svg), ablate them, quantize around them with a
# GGUF export, and check that the export kept them.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${SUPERWEIGHT_DEMO_PORT:-50051}
log=build/demo-server.log
rm -rf models/demo-exports  # the demo's own exports, written again each run
build/bin/superweightd --listen=127.0.0.1:$port --model_root=models \
  --confirm_text_file=testdata/text/wiki.test.raw --state_dir=build/demo-state \
  --export_root=models/demo-exports >"$log" 2>&1 &
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
echo
echo "== quantize: INT4 in blocks of 128 with the super weight restored, exported as a Q4_0 GGUF"
echo "   (the super weight's down_proj kept at F16) and evaluated as the server opens it"
build/bin/superweight --server=127.0.0.1:$port quantize --model=SmolLM2-135M-Instruct.Q4_1.gguf \
  --bits=4 --block_size=128 --restore --tasks=wikitext2 --max_windows=4 \
  --export=gguf:Q4_0 --export_name=SmolLM2-135M-Instruct.Q4_0-sw.gguf
echo
echo "== check: did the export keep the super weights of the original? (exit 3 if not)"
build/bin/superweight --server=127.0.0.1:$port check \
  --model=demo-exports/SmolLM2-135M-Instruct.Q4_0-sw.gguf \
  --reference=SmolLM2-135M-Instruct.Q4_1.gguf --max_windows=4 --max_ppl_ratio=1.3
