"""Scoring throughput: the engine against transformers and llama.cpp, same thread count, same run.

For each model (SmolLM2-135M-Instruct Q4_1 GGUF, and a generated 1.1B llama with random bf16
weights) and each precision (f32, bf16), scores random 512-token sequences with
superweight-bench-score, with transformers (same dtype) and with llama.cpp (llama-cpp-python
built from source with native flags, from .venv-bench: the same Q4_1 GGUF, which llama.cpp runs
natively whatever the precision; for the 1.1B, the same weights written as an F32 GGUF for the
f32 row and a BF16 GGUF for the bf16 row), taking turns a sequence at a time, and prints
tokens/s of each and the median of the per-pair ratios with its quartiles, the
engine's peak RSS, its anonymous memory beyond the mapped file and its model-open time, and the
engine's matmul throughput against oneDNN alone on the same shapes, measured right after each
of the engine's sequences (the median of those per-sequence shares counts). oneDNN alone is
handed bf16 activations and prepacked weights; the engine's matmul time includes converting
its (quantized) weights but not rounding and laying out its f32 activations, which is given
apart: the share with that conversion included is printed too.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.path.join(ROOT, "build", "bin")
PY = os.path.join(ROOT, ".venv", "bin", "python")
BENCH_PY = os.path.join(ROOT, ".venv-bench", "bin", "python")  # llama-cpp-python lives here
THREADS = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))


def run_json(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def peer_env():
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
    cap = os.environ.get("SUPERWEIGHT_MAX_ISA", "")
    if cap:
        # transformers capped like the engine where it can be: PyTorch's own kernels (ATen) and
        # OpenBLAS. Not its oneDNN: capped, PyTorch still routes bf16 linears to it (its CPU
        # check ignores the cap) and oneDNN 2.6 refuses them below AVX-512, so transformers'
        # bf16 matmuls keep this CPU's full ISA (AMX here): a stronger peer than on a real AVX2
        # CPU. llama.cpp is built for this CPU and has no run-time cap: it runs uncapped too.
        env["ATEN_CPU_CAPABILITY"] = "avx2" if cap == "avx2" else "avx512"
    # Debian's OpenBLAS picks a generic SSE3 kernel on CPUs it does not know; PyTorch at its
    # best gets the AVX-512 one where the CPU has AVX-512 (the kernel used is printed).
    with open("/proc/cpuinfo") as f:
        if "avx512f" in f.read() and cap != "avx2":
            env["OPENBLAS_CORETYPE"] = "SkylakeX"
        elif cap == "avx2":
            env["OPENBLAS_CORETYPE"] = "Haswell"
    return env


def shapes(model_path):
    info = run_json([os.path.join(BIN, "superweight-engine"), "info", model_path])
    h, i, q = info["hidden"], info["intermediate"], info["heads"] * info["head_dim"]
    kv = info["kv_heads"] * info["head_dim"]
    per_layer = [f"{h}x{q}", f"{h}x{kv}", f"{h}x{kv}", f"{q}x{h}", f"{h}x{i}", f"{h}x{i}", f"{i}x{h}"]
    return ",".join(per_layer)


class Served:
    """A scorer started with --serve: one sequence per request, its seconds answered at once."""

    def __init__(self, cmd, env):
        self.cmd = cmd
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, env=env)
        self._read()  # {"ready": true} once loaded and warmed up

    def _read(self):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.err.seek(0)
                sys.exit(f"{' '.join(self.cmd)} stopped (exit {self.proc.wait()}):\n"
                         f"{self.err.read()[-2000:]}")
            if line.startswith("{"):  # anything else a library prints is passed over
                return json.loads(line)

    def score(self):
        """One sequence: {"seconds": ...} (and the engine's "linear_gflops")."""
        self.proc.stdin.write("score\n")
        self.proc.stdin.flush()
        return self._read()

    def finish(self):
        self.proc.stdin.close()
        summary = self._read()
        self.proc.wait()
        return summary


def main():
    smollm2 = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    # (name, engine's path, sequences, llama.cpp's GGUF per precision)
    models = [("SmolLM2-135M Q4_1", smollm2, 4, {"f32": smollm2, "bf16": smollm2})]
    big = os.path.join(ROOT, "build", "bench-models", "llama-1.1b-bf16")
    if os.environ.get("BENCH_SKIP_1B") != "1":
        if not os.path.exists(os.path.join(big, "config.json")):
            print("generating the random 1.1B llama (bf16) ...", flush=True)
            subprocess.run([PY, os.path.join(ROOT, "bench", "make_random_llama.py"), big], check=True)
        ggufs = {}
        for precision, kind in (("f32", "F32"), ("bf16", "BF16")):
            ggufs[precision] = os.path.join(ROOT, "build", "bench-models", f"llama-1.1b-{kind}.gguf")
            if not os.path.exists(ggufs[precision]):
                print(f"writing it as a {kind} GGUF for llama.cpp ...", flush=True)
                subprocess.run([PY, os.path.join(ROOT, "bench", "hf_to_gguf.py"), big,
                                ggufs[precision] + ".tmp", kind], check=True)
                os.rename(ggufs[precision] + ".tmp", ggufs[precision])
        models.append(("llama-1.1B random bf16", big, 2, ggufs))
    cpu = run_json([os.path.join(BIN, "superweight-engine"), "cpu"])
    print(f"CPU class: {cpu['active']}" + (f" (capped by SUPERWEIGHT_MAX_ISA; the CPU has {cpu['detected']})"
                                          if cpu["active"] != cpu["detected"] else "")
          + f", {THREADS} threads", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
    # The machines are shared and their speed drifts by 30% or more within a minute. So both
    # scorers stay loaded side by side and take turns a sequence at a time (ABBA order), and the
    # median of the per-pair ratios counts. oneDNN alone on the same shapes runs right after each
    # of the engine's sequences, and the median of those per-pair shares counts in the same way.
    pairs = int(os.environ.get("BENCH_PAIRS", 10))
    rows = []
    median = statistics.median  # the mean of the middle two for an even count

    def spread(values):
        values = sorted(values)
        return statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3

    for name, path, sequences, ggufs in models:
        for precision in ("f32", "bf16"):
            flag = ["--bf16"] if precision == "bf16" else []
            ceiling_cmd = [os.path.join(BIN, "superweight-bench-matmul"), "--m=512",
                           f"--shapes={shapes(path)}"] + flag
            engine = Served([os.path.join(BIN, "superweight-bench-score"), path, "--tokens=512",
                             f"--sequences={sequences}", "--serve"] + flag, env)
            peer = Served([PY, os.path.join(ROOT, "bench", "hf_score.py"), path, precision, "512",
                           str(sequences), str(THREADS), "--serve"], peer_env())
            llama = Served([BENCH_PY, os.path.join(ROOT, "bench", "llama_cpp_score.py"), ggufs[precision],
                            "512", str(sequences), str(THREADS)], env)
            eng_s, hf_s, ll_s, shares, shares_with_inputs, ceilings = [], [], [], [], [], []

            ceiling_type = ["f32"]

            def engine_then_ceiling():
                e = engine.score()
                eng_s.append(e["seconds"])
                alone = run_json(ceiling_cmd, env)
                ceilings.append(alone["gflops"])
                ceiling_type[:] = [alone["type"]]
                shares.append(e["linear_gflops"] / ceilings[-1])
                shares_with_inputs.append(e["linear_gflops_with_inputs"] / ceilings[-1])

            for p in range(pairs):
                if p % 2 == 0:
                    engine_then_ceiling()
                    hf_s.append(peer.score()["seconds"])
                    ll_s.append(llama.score()["seconds"])
                else:
                    ll_s.append(llama.score()["seconds"])
                    hf_s.append(peer.score()["seconds"])
                    engine_then_ceiling()
            eng, hf, ll = engine.finish(), peer.finish(), llama.finish()
            ratios = sorted(h / e for e, h in zip(eng_s, hf_s))
            ratio, quartiles = median(ratios), spread(ratios)
            ll_ratios = sorted(lt / e for e, lt in zip(eng_s, ll_s))
            ll_ratio, ll_quartiles = median(ll_ratios), spread(ll_ratios)
            ll["tokens_per_s"] = 512 / median(ll_s)
            share, share_q = median(shares), spread(shares)
            share_in = median(shares_with_inputs)
            eng["tokens_per_s"] = 512 / median(eng_s)
            hf["tokens_per_s"] = 512 / median(hf_s)
            ceiling = {"gflops": median(ceilings), "type": ceiling_type[0], "shares": sorted(shares),
                       "shares_with_inputs": sorted(shares_with_inputs)}
            rows.append((name, precision, eng, hf, ceiling, ratios, ll, ll_ratios))
            print(f"{name:24s} {precision:4s} engine {eng['tokens_per_s']:8.1f} tok/s  "
                  f"transformers {hf['tokens_per_s']:8.1f} tok/s  ratio {ratio:5.2f}x "
                  f"(quartiles {quartiles[0]:.2f}-{quartiles[2]:.2f} over {len(ratios)} pairs)  "
                  f"llama.cpp {ll['tokens_per_s']:8.1f} tok/s ({os.path.basename(ggufs[precision])})  "
                  f"ratio {ll_ratio:5.2f}x (quartiles {ll_quartiles[0]:.2f}-{ll_quartiles[2]:.2f})  "
                  f"| matmul {eng['linear_gflops']:6.1f} GFLOP/s = {100 * share:3.0f}% of oneDNN alone "
                  f"(quartiles {100 * share_q[0]:.0f}-{100 * share_q[2]:.0f}%, "
                  f"{100 * share_in:.0f}% with the activations' conversion; oneDNN alone "
                  f"{ceiling['gflops']:.1f} {ceiling['type']})  | open {eng['open_ms']:.0f} ms, peak RSS {eng['peak_rss_mb']:.0f} MB, "
                  f"anon {eng['anon_mb']:.0f} MB, mapped {eng['mapped_mb']:.0f} MB  "
                  f"[{hf['blas']}, {THREADS} threads]", flush=True)
    print(json.dumps([{"model": r[0], "precision": r[1], "engine": r[2], "transformers": r[3],
                       "onednn_alone_gflops": r[4]["gflops"], "matmul_shares": r[4]["shares"],
                       "matmul_shares_with_inputs": r[4]["shares_with_inputs"],
                       "pair_ratios": r[5], "llama_cpp": r[6], "llama_cpp_pair_ratios": r[7],
                       "cpu_class": cpu["active"]} for r in rows]))


if __name__ == "__main__":
    main()
