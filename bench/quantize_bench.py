"""Quantization benchmark: the engine against its peers, same machine, same threads, same run.

(a) Quantize and evaluate one setting of the paper's: every linear weight of SmolLM2-135M's
layers fake-quantized INT4 by round-to-nearest min-max per block of 65536 consecutive elements,
outliers clipped at z = 9, the super weight (layer 11, down_proj [507, 1229]) restored; then
WikiText-2 perplexity over 8 windows of 512, f32. The engine does it in one CLI call
(`perplexity --quantize=4,65536,z,9 --keep=...`: model open, quantization, tokenization and
scoring all timed); transformers does it as the paper's code does, in PyTorch on the loaded
model's weights (per block of the flattened weight: |w| mean + z std clip (f64), min-max, step =
(max - min) / levels, sub / div / round / mul / add, in place; the super weight written back),
then the usual loop over windows, batch 1. Its model is loaded from the same GGUF before the
clock starts (the load is printed apart) and restored to the stored weights, untimed, before
each run; it is handed the engine's token ids. Blocks run over the weights in the engine's
(GGUF) row order, q and k permuted as llama.cpp's converter does and back, and the last block of
a tensor is the shorter remainder as in the engine (the paper's code, when 65536 does not divide
a tensor, as none of SmolLM2's, quantizes the whole tensor as one block instead): both peers
quantize the same model, so their perplexities must agree. Runs in ABBA order (engine,
transformers, transformers, engine).

(b) GGUF export: `superweight-engine requantize` of the layers' matrices to Q4_1 and Q8_0 against
llama.cpp's quantizer (llama_cpp.llama_model_quantize from .venv-bench, kept loaded in a worker
process and timed around the call alone; the engine is timed as a whole process) on the same
F32 source (SmolLM2's layers written as F32 by the engine first; its Q8_0 token embedding stays
Q8_0 in both: llama.cpp is told to keep that type, and to quantize every layer matrix to the one
type asked, `pure`). Several ABBA rounds; the outputs are compared tensor by tensor.

    .venv/bin/python bench/quantize_bench.py
"""
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from score_throughput import peer_env  # noqa: E402  (the same BLAS choices for transformers)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ENGINE = os.path.join(ROOT, "build", "bin", "superweight-engine")
BENCH_PY = os.path.join(ROOT, ".venv-bench", "bin", "python")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
TEXT = os.path.join(ROOT, "testdata", "text", "wiki.test.raw")
THREADS = int(os.environ.get("BENCH_THREADS", 2))
BITS, BLOCK, Z = 4, 65536, 9.0
SUPER_WEIGHT = (11, 507, 1229)
WINDOW, WINDOWS = 512, int(os.environ.get("BENCH_QUANTIZE_WINDOWS", 8))
EXPORT_ROUNDS = int(os.environ.get("BENCH_EXPORT_ROUNDS", 3))  # ABBA rounds per type
LINEARS = [("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"),
           ("self_attn", "o_proj"), ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj")]

# The llama.cpp side of (b): a worker reading "SRC OUT TYPE" lines, answering the seconds of
# llama_model_quantize alone.
LLAMA_WORKER = r"""
import ctypes, json, os, sys, time
import llama_cpp
threads = int(sys.argv[1])
ftypes = {"Q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1, "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}
null = os.open(os.devnull, os.O_WRONLY)
os.dup2(null, 2)  # llama.cpp logs every tensor to stderr
print(json.dumps({"ready": llama_cpp.__version__}), flush=True)
for line in sys.stdin:
    src, out, kind = line.split()
    p = llama_cpp.llama_model_quantize_default_params()
    p.nthread = threads
    p.ftype = ftypes[kind]
    p.token_embedding_type = 8  # GGML_TYPE_Q8_0, the source's: copied as it is
    p.pure = True
    t = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(src.encode(), out.encode(), ctypes.byref(p))
    print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t}), flush=True)
"""


def run_json(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(cmd, env):
    t = time.perf_counter()
    answer = run_json(cmd, env)
    return time.perf_counter() - t, answer


def permute(w, heads):
    """transformers' q/k rows into llama.cpp's (GGUF, the engine's) order."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def unpermute(w, heads):
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def fake_quantize_(w, torch):
    """The paper's quantize_blockwise (INT, zscore clip), in place on w's flattened values, in
    blocks of BLOCK with a shorter last one. Two details as the engine's rather than the
    paper's, for the same model out of both peers: the clip threshold is computed in f64 (the
    paper's, in the weights' f32, can land an ulp away, which moves the block's min and step and
    a few dozen near-tie elements of a tensor one level), and the rounding is of
    (w - min) / step, not (w - min) * (levels / (max - min)) (about 1e-4 of the elements one
    level away). SmolLM2-135M at INT4 is so fragile that either moves its perplexity by
    percents (measured here: the f32 threshold alone 1.4% over 8 windows; with the paper's
    rounding as well, 7% over 1). As written, the two peers' quantized weights are identical."""
    flat = w.view(-1)
    full = flat.numel() // BLOCK * BLOCK
    blocks = [flat[:full].view(-1, BLOCK)] if full else []
    if full < flat.numel():
        blocks.append(flat[full:].view(1, -1))
    for b in blocks:
        magnitudes = b.abs().double()
        threshold = (Z * magnitudes.std(dim=1, keepdim=True)
                     + magnitudes.mean(dim=1, keepdim=True)).float()
        b.copy_(torch.max(torch.min(b, threshold), -threshold))
        minima = b.min(dim=1, keepdim=True).values
        maxima = b.max(dim=1, keepdim=True).values
        step = (maxima - minima) / (2 ** BITS - 1)
        b.sub_(minima).div_(step).round_().mul_(step).add_(minima)


def transformers_run(hf, ids, torch):
    """Quantize (the super weight restored), then perplexity: what the clock measures."""
    heads = {"q_proj": hf.config.num_attention_heads, "k_proj": hf.config.num_key_value_heads}
    sw_layer, sw_row, sw_col = SUPER_WEIGHT
    with torch.no_grad():
        for i, layer in enumerate(hf.model.layers):
            for part, name in LINEARS:
                weight = getattr(getattr(layer, part), name).weight
                if name in heads:
                    w = permute(weight.data, heads[name]).contiguous()
                    fake_quantize_(w, torch)
                    weight.data.copy_(unpermute(w, heads[name]))
                elif (i, name) == (sw_layer, "down_proj"):
                    kept = weight.data[sw_row, sw_col].clone()
                    fake_quantize_(weight.data, torch)
                    weight.data[sw_row, sw_col] = kept
                else:
                    fake_quantize_(weight.data, torch)
        nll, count = 0.0, 0
        for w in range(WINDOWS):
            chunk = torch.tensor([ids[w * WINDOW:(w + 1) * WINDOW]])
            logits = hf(chunk).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="sum"))
            count += WINDOW - 1
    return math.exp(nll / count)


def bench_quantize_and_evaluate(cpu_env):
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(THREADS)
    t = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(os.path.dirname(MODEL), gguf_file=os.path.basename(MODEL),
                                              torch_dtype=torch.float32).eval()
    hf.lm_head.weight = hf.model.embed_tokens.weight  # tied, as llama.cpp and the engine
    load_s = time.perf_counter() - t
    stored = {n: p.detach().clone() for n, p in hf.named_parameters() if "layers." in n}
    ids = run_json([ENGINE, "tokenize", MODEL, f"--text_file={TEXT}"])["ids"]
    cmd = [ENGINE, "perplexity", MODEL, f"--text_file={TEXT}", f"--window={WINDOW}",
           f"--max_windows={WINDOWS}", f"--quantize={BITS},{BLOCK},z,{Z:g}",
           "--keep=" + ",".join(map(str, SUPER_WEIGHT))]
    engine_s, hf_s, engine_ppl, hf_ppl = [], [], [], []
    for who in ["engine", "hf", "hf", "engine"]:
        if who == "engine":
            s, answer = timed(cmd, cpu_env)
            engine_s.append(s)
            engine_ppl.append(answer["perplexity"])
            assert answer["tokens_scored"] == WINDOWS * (WINDOW - 1), answer
        else:
            with torch.no_grad():
                for n, p in hf.named_parameters():
                    if n in stored:
                        p.copy_(stored[n])
            t = time.perf_counter()
            hf_ppl.append(transformers_run(hf, ids, torch))
            hf_s.append(time.perf_counter() - t)
        print(f"  {who}: {(engine_s if who == 'engine' else hf_s)[-1]:.1f} s", flush=True)
    return {"engine_s": engine_s, "hf_s": hf_s, "engine_ppl": engine_ppl[0], "hf_ppl": hf_ppl[0],
            "hf_load_s": load_s, "torch": torch.__version__}


def gguf_tensors_equal(a, b):
    import gguf
    import numpy as np
    ta = {t.name: t for t in gguf.GGUFReader(a).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(b).tensors}
    if set(ta) != set(tb):
        return False
    return all(ta[n].tensor_type == tb[n].tensor_type and
               np.array_equal(np.asarray(ta[n].data).view(np.uint8), np.asarray(tb[n].data).view(np.uint8))
               for n in ta)


def bench_export(cpu_env, work):
    source = os.path.join(work, "smollm2-f32.gguf")
    run_json([ENGINE, "requantize", MODEL, "--type=F32", f"--out={source}"])
    worker = subprocess.Popen([BENCH_PY, "-c", LLAMA_WORKER, str(THREADS)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=cpu_env)
    version = json.loads(worker.stdout.readline())["ready"]
    results = {}
    try:
        for kind in ["Q4_1", "Q8_0"]:
            ours, theirs = os.path.join(work, f"engine-{kind}.gguf"), os.path.join(work, f"llama-{kind}.gguf")
            engine_s, llama_s = [], []
            for _ in range(EXPORT_ROUNDS):
                for who in ["engine", "llama", "llama", "engine"]:
                    if who == "engine":
                        s, _ = timed([ENGINE, "requantize", source, f"--type={kind}", f"--out={ours}"],
                                     cpu_env)
                        engine_s.append(s)
                    else:
                        worker.stdin.write(f"{source} {theirs} {kind}\n")
                        worker.stdin.flush()
                        answer = json.loads(worker.stdout.readline())
                        if answer["rc"] != 0:
                            sys.exit(f"llama_model_quantize to {kind} failed: {answer}")
                        llama_s.append(answer["seconds"])
            results[kind] = {"engine_s": engine_s, "llama_s": llama_s,
                             "identical": gguf_tensors_equal(ours, theirs),
                             "bytes": os.path.getsize(ours)}
    finally:
        worker.stdin.close()
        worker.wait()
    return results, version, os.path.getsize(source)


def main():
    cpu = run_json([ENGINE, "cpu"])
    cpu_env = dict(peer_env(), OMP_NUM_THREADS=str(THREADS))
    os.environ.update(cpu_env)  # before torch loads its BLAS
    print(f"CPU class: {cpu['active']}" + (f" (capped by SUPERWEIGHT_MAX_ISA; the CPU has {cpu['detected']})"
                                          if cpu["active"] != cpu["detected"] else "")
          + f", {THREADS} threads", flush=True)
    print(f"(a) INT{BITS} b{BLOCK} z={Z:g}, super weight restored, WikiText-2 {WINDOWS} x {WINDOW}, "
          "f32 (ABBA):", flush=True)
    a = bench_quantize_and_evaluate(cpu_env)
    print("(b) GGUF export from an F32 GGUF (ABBA rounds):", flush=True)
    with tempfile.TemporaryDirectory() as work:
        b, llama_version, source_bytes = bench_export(cpu_env, work)

    e, h = statistics.mean(a["engine_s"]), statistics.mean(a["hf_s"])
    print()
    print(f"{'job':<44} {'engine':>10} {'peer':>10} {'peer/engine':>12}")
    print(f"{'(a) quantize + perplexity, transformers ' + a['torch'][:6]:<44} {e:>9.1f}s {h:>9.1f}s "
          f"{h / e:>11.1f}x")
    print(f"{'    perplexity':<44} {a['engine_ppl']:>10.3f} {a['hf_ppl']:>10.3f} "
          f"{abs(a['engine_ppl'] - a['hf_ppl']) / a['hf_ppl']:>11.1e}r")
    for kind, r in b.items():
        e, l = statistics.median(r["engine_s"]), statistics.median(r["llama_s"])
        print(f"{f'(b) F32 -> {kind} GGUF, llama.cpp {llama_version}':<44} {e:>9.3f}s {l:>9.3f}s "
              f"{l / e:>11.2f}x")
    print()
    print(f"(a) per run: engine {', '.join(f'{s:.1f}' for s in a['engine_s'])} s; transformers "
          f"{', '.join(f'{s:.1f}' for s in a['hf_s'])} s, best / best "
          f"{min(a['hf_s']) / min(a['engine_s']):.1f}x (its GGUF load, untimed: {a['hf_load_s']:.1f} s; "
          f"the engine's time includes opening the model and tokenizing the text)")
    for kind, r in b.items():
        print(f"(b) {kind}: engine {', '.join(f'{s:.3f}' for s in r['engine_s'])} s (whole process); "
              f"llama.cpp {', '.join(f'{s:.3f}' for s in r['llama_s'])} s (the call alone); "
              f"{source_bytes / 2**20:.0f} MiB in, {r['bytes'] / 2**20:.0f} MiB out; outputs "
              f"{'identical' if r['identical'] else 'DIFFER'} tensor by tensor")
    print(json.dumps({"cpu_class": cpu["active"], "threads": THREADS,
                      "quantize_eval": {k: v for k, v in a.items()},
                      "export": b}))


if __name__ == "__main__":
    main()
