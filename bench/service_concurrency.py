"""N concurrent Score requests on one model: superweightd batching them into shared forward
passes against the same server with batching off (--max_batch_sequences=1), in the same run.
Prints throughput of each, their ratio and latency percentiles.

  service_concurrency.py [--model=PATH] [--requests=32] [--concurrency=16] [--tokens=128]
"""
import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.path.join(ROOT, "build", "bin")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(model_root, model, batch, requests, concurrency, tokens, vocab):
    port = free_port()
    server = subprocess.Popen([os.path.join(BIN, "superweightd"), f"--listen=127.0.0.1:{port}",
                               f"--model_root={model_root}", f"--max_batch_sequences={batch}"],
                              stderr=subprocess.DEVNULL)
    client = [os.path.join(BIN, "superweight"), f"--server=127.0.0.1:{port}"]
    try:
        for _ in range(100):
            if subprocess.run(client + ["--timeout=1", "models"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        rng = random.Random(7)
        inputs = [",".join(str(rng.randrange(3, vocab)) for _ in range(tokens)) for _ in range(requests)]
        subprocess.run(client + ["score", f"--model={model}", f"--token_ids={inputs[0]}"],
                       check=True, capture_output=True)  # warm-up: open the model

        def one(ids):
            t0 = time.time()
            subprocess.run(client + ["score", f"--model={model}", f"--token_ids={ids}"],
                           check=True, capture_output=True)
            return time.time() - t0

        t0 = time.time()
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = sorted(pool.map(one, inputs))
        wall = time.time() - t0
    finally:
        server.terminate()
        server.wait()
    pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
    return {"requests_per_s": requests / wall, "tokens_per_s": requests * tokens / wall,
            "p50_s": pct(0.5), "p90_s": pct(0.9), "p99_s": pct(0.99)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=128)
    a = ap.parse_args()
    root = tempfile.mkdtemp()
    try:
        name = os.path.basename(a.model)
        if os.path.isdir(a.model):
            shutil.copytree(a.model, os.path.join(root, name))
        else:
            os.link(a.model, os.path.join(root, name)) if os.stat(a.model).st_dev == os.stat(root).st_dev \
                else shutil.copy(a.model, os.path.join(root, name))
        vocab = json.loads(subprocess.run([os.path.join(BIN, "superweight-engine"), "info", a.model],
                                          capture_output=True, text=True, check=True).stdout)["vocab"]
        results = {}
        for label, batch in (("batched", 32), ("unbatched", 1)):
            results[label] = run(root, name, batch, a.requests, a.concurrency, a.tokens, vocab)
            r = results[label]
            print(f"{label:10s} {r['requests_per_s']:6.2f} req/s  {r['tokens_per_s']:8.1f} tok/s  "
                  f"latency p50 {r['p50_s']:.2f} s  p90 {r['p90_s']:.2f} s  p99 {r['p99_s']:.2f} s", flush=True)
        print(f"batched / unbatched throughput: "
              f"{results['batched']['requests_per_s'] / results['unbatched']['requests_per_s']:.2f}x "
              f"({a.requests} requests of {a.tokens} tokens, {a.concurrency} concurrent)")
        print(json.dumps(results))
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    sys.exit(main())
