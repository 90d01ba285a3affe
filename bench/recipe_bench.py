"""Super weights through llama.cpp's own quantizer: SmolLM2-135M (an F32 GGUF made from the shipped
file) quantized by llama-quantize to Q4_K_M, Q3_K_M and Q2_K,

  plain      the file type alone;
  imatrix    with an importance matrix the engine computed (`superweight-engine imatrix`,
             llama-imatrix's format) on a calibration text apart from the evaluation windows;
  recipe     the service's recipe (`recipe` job: --tensor-type overrides where the mix loses a
             super weight at the default bound) with the same matrix, its super weight's column
             boosted (--boost, default x100);
  engine     the service's own file of the recipe (the engine's llama-quantize emulation,
             byte-identical to llama-quantize without an importance matrix),

each file then checked by the service (Check: the super weight's relative error, the super
activation on the paper's prompt against the F32 model's, WikiText-2 perplexity and the verdict
at Check's defaults) and scored by llama.cpp on the same windows (llama-cpp-python, f32 KV
cache). Also times the engine's importance matrix against llama-imatrix (same text, chunks and
threads; ABBA). Needs make build and tools/setup-bench.sh (llama-quantize, llama-imatrix).

    .venv/bin/python bench/recipe_bench.py [--windows=8] [--chunks=32] [--boost=100]
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.path.join(ROOT, "build", "bin")
ENGINE = os.path.join(BIN, "superweight-engine")
TOOLS = os.path.join(ROOT, ".llama-cpp-tools")
BENCH_PY = os.path.join(ROOT, ".venv-bench", "bin", "python")
SMOLLM2 = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
WIKITEXT = os.path.join(ROOT, "server", "data", "eval", "wikitext2", "wiki.test.raw")
SUPER_WEIGHT = "11,507,1229"
FILE_TYPES = ["Q4_K_M", "Q3_K_M", "Q2_K"]


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode not in kw.pop("ok", (0,)):
        raise SystemExit(f"{' '.join(cmd)} -> {out.returncode}\n{out.stderr[-3000:]}")
    return out


class Service:
    """superweightd on a free loopback port over `root`, and its client."""

    def __init__(self, root, scratch):
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.token = os.path.join(scratch, "token")
        with open(self.token, "w") as f:
            f.write("bench-token\n")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "superweightd"), f"--listen=127.0.0.1:{self.port}",
             f"--model_root={root}", f"--state_dir={scratch}/jobs", f"--token_file={self.token}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.client("health", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise SystemExit("superweightd did not come up")

    def client(self, verb, *flags, check=True):
        cmd = [os.path.join(BIN, "superweight"), f"--server=127.0.0.1:{self.port}",
               f"--token_file={self.token}", verb, *flags]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if check and out.returncode not in (0, 3):
            raise SystemExit(f"{' '.join(cmd)} -> {out.returncode}\n{out.stderr}")
        return out

    def call(self, verb, *flags):
        return json.loads(self.client(verb, "--json", *flags).stdout)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def llama_cpp_perplexity(model, windows, scratch):
    """exp(mean NLL) over the windows, each scored from its first token, as the engine does."""
    nll, tokens = 0.0, 0
    for i, ids in enumerate(windows):
        path = os.path.join(scratch, f"window{i}.ids")
        with open(path, "w") as f:
            f.write(",".join(map(str, ids)))
        r = json.loads(run([BENCH_PY, os.path.join(ROOT, "tools", "llama_cpp_eval.py"),
                            "perplexity", model, path]).stdout)
        nll += math.log(r["perplexity"]) * r["tokens"]
        tokens += r["tokens"]
    return math.exp(nll / tokens)


def time_imatrix(source, calibration, chunks, scratch, rounds=2):
    """The engine's importance matrix against llama-imatrix, same text, chunks and 2 threads."""
    def engine():
        out = os.path.join(scratch, "timed-engine.imatrix.gguf")
        if os.path.exists(out):
            os.remove(out)
        t = time.perf_counter()
        run([ENGINE, "imatrix", source, f"--text_file={calibration}", "--chunk=512",
             f"--chunks={chunks}", f"--out={out}"], env=dict(os.environ, OMP_NUM_THREADS="2"))
        return time.perf_counter() - t

    def llama():
        out = os.path.join(scratch, "timed-llama.imatrix.gguf")
        t = time.perf_counter()
        run([os.path.join(TOOLS, "llama-imatrix"), "-m", source, "-f", calibration, "-c", "512",
             "--chunks", str(chunks), "-t", "2", "--no-ppl", "-o", out])
        return time.perf_counter() - t

    times = {"engine": [], "llama-imatrix": []}
    for _ in range(rounds):  # ABBA
        times["engine"].append(engine())
        times["llama-imatrix"].append(llama())
        times["llama-imatrix"].append(llama())
        times["engine"].append(engine())
    return {k: min(v) for k, v in times.items()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--chunks", type=int, default=32)
    p.add_argument("--boost", type=float, default=100)
    args = p.parse_args()
    scratch = tempfile.mkdtemp(prefix="superweight-recipe-bench-")
    root = os.path.join(scratch, "models")
    os.makedirs(root)
    try:
        source = os.path.join(root, "smollm2-f32.gguf")
        run([ENGINE, "requantize", SMOLLM2, "--file_type=F32", f"--out={source}"])
        # Calibration from the second half of the text; evaluation windows from its start.
        with open(WIKITEXT, encoding="utf-8") as f:
            text = f.read()
        calibration = os.path.join(scratch, "calibration.txt")
        with open(calibration, "w", encoding="utf-8") as f:
            f.write(text[len(text) // 2:])
        imatrix = os.path.join(scratch, "plain.imatrix.gguf")
        boosted = os.path.join(scratch, "boosted.imatrix.gguf")
        run([ENGINE, "imatrix", source, f"--text_file={calibration}", "--chunk=512",
             f"--chunks={args.chunks}", f"--out={imatrix}"])
        run([ENGINE, "imatrix", source, f"--text_file={calibration}", "--chunk=512",
             f"--chunks={args.chunks}", f"--out={boosted}", f"--boost={args.boost}",
             f"--super_weights={SUPER_WEIGHT}"])
        ids = json.loads(run([ENGINE, "tokenize", source, f"--text_file={WIKITEXT}"]).stdout)
        ids = ids["ids"] if isinstance(ids, dict) else ids
        windows = [ids[i * 512:(i + 1) * 512] for i in range(args.windows)]

        service = Service(root, scratch)
        rows = []
        try:
            for file_type in FILE_TYPES:
                recipe = service.call("recipe", "--model=smollm2-f32.gguf",
                                      f"--file_type={file_type}",
                                      f"--super_weights={SUPER_WEIGHT}", "--window=512",
                                      f"--max_windows={args.windows}")["result"]
                overrides = recipe.get("tensor_type_overrides", [])
                variants = [
                    ("plain", [], None),
                    ("imatrix", [], imatrix),
                    ("recipe", overrides, boosted),
                ]
                for name, tensor_types, matrix in variants:
                    out = os.path.join(root, f"{file_type}-{name}.gguf")
                    cmd = [os.path.join(TOOLS, "llama-quantize")]
                    if matrix:
                        cmd += ["--imatrix", matrix]
                    for o in tensor_types:
                        cmd += ["--tensor-type", o]
                    run(cmd + [source, out, file_type, "2"])
                    rows.append((file_type, name, out))
                out = os.path.join(root, f"{file_type}-engine.gguf")
                run([ENGINE, "requantize", source, f"--file_type={file_type}", f"--out={out}"]
                    + [f"--tensor_type={o}" for o in overrides])
                rows.append((file_type, "engine", out))
            table = []
            for file_type, name, path in rows:
                check = service.call("check", f"--model={os.path.basename(path)}",
                                     "--reference=smollm2-f32.gguf",
                                     f"--super_weights={SUPER_WEIGHT}", "--window=512",
                                     f"--max_windows={args.windows}")["result"]
                [sw] = check["super_weights"]
                table.append({
                    "file_type": file_type, "variant": name,
                    "ppl_engine": check["model_perplexity"],
                    "ppl_llama_cpp": llama_cpp_perplexity(path, windows, scratch),
                    "sw_rel_error": sw.get("relative_error", 0.0),
                    "sa_ratio": sw.get("model_activation", 0.0) / sw["reference_activation"],
                    "check": "passed" if check.get("passed") else "failed",
                    "bytes": os.path.getsize(path),
                })
            reference = check["reference_perplexity"]
        finally:
            service.stop()
        timing = time_imatrix(source, calibration, args.chunks, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"SmolLM2-135M (F32 source), WikiText-2: {args.windows} windows of 512; the F32 model's "
          f"perplexity {reference:.4f} (engine); importance matrix from {args.chunks} chunks of "
          f"512 of the text's second half, boost x{args.boost:g}")
    print(f"{'type':8} {'variant':8} {'ppl engine':>10} {'ppl llama':>10} {'SW rel err':>11} "
          f"{'SA kept':>8} {'Check':>7} {'MiB':>7}")
    for r in table:
        print(f"{r['file_type']:8} {r['variant']:8} {r['ppl_engine']:10.4f} "
              f"{r['ppl_llama_cpp']:10.4f} {r['sw_rel_error']:11.2e} {r['sa_ratio']:8.4f} "
              f"{r['check']:>7} {r['bytes'] / 2**20:7.2f}")
    print(f"importance matrix, {args.chunks} chunks of 512, 2 threads (best of ABBA): engine "
          f"{timing['engine']:.2f} s, llama-imatrix {timing['llama-imatrix']:.2f} s "
          f"(llama-imatrix / engine = {timing['llama-imatrix'] / timing['engine']:.2f}x)")
    json.dump({"rows": table, "imatrix_seconds": timing}, sys.stderr)
    sys.stderr.write("\n")


if __name__ == "__main__":
    main()
