"""Ablate's benchmark: the whole job (every setting, the seven tasks, the same examples) through
the real server and client, against lm-evaluation-harness on transformers run once per row of
the table (timed on the intact row: the same tasks and examples, one simple_evaluate call, the
model loaded before the clock starts), same machine, same threads. Prints wall times and their
ratio.

    BENCH_ABLATE_EXAMPLES=200 .venv/bin/python bench/ablate_bench.py

BENCH_ABLATE_BIN names another build's bin/ (two builds timed alike), BENCH_ABLATE_FLAGS adds
client flags (--bf16, --tasks=wikitext2,..., --max_windows=N), BENCH_ABLATE_JSON keeps the job's
result there, and BENCH_ABLATE_LMEVAL=0 times the job alone. SUPERWEIGHT_MAX_ISA caps the server, and
transformers as far as it can be (score_throughput.peer_env: the BLAS kernel of this CPU, or of the
cap, for both rows).
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from score_throughput import peer_env  # noqa: E402  (the same BLAS choices for transformers)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.environ.get("BENCH_ABLATE_BIN", os.path.join(ROOT, "build", "bin"))
MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
TASKS = ["piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande", "sciq", "lambada"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def matmul_totals(metrics_port):
    """The server's matmul flops and seconds so far, from /metrics (None where it has none)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    values = {}
    for line in body.splitlines():
        name, _, value = line.partition(" ")
        if name in ("superweight_matmul_flops_total", "superweight_matmul_seconds_total"):
            values[name] = float(value)
    if len(values) != 2:
        return None
    return values["superweight_matmul_flops_total"], values["superweight_matmul_seconds_total"]


def main():
    examples = int(os.environ.get("BENCH_ABLATE_EXAMPLES", 200))
    threads = os.cpu_count() or 1
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    port = metrics_port = free_port()
    while metrics_port == port:
        metrics_port = free_port()
    with tempfile.TemporaryDirectory() as state:
        server = subprocess.Popen([os.path.join(BIN, "superweightd"), f"--listen=127.0.0.1:{port}",
                                   f"--metrics_listen=127.0.0.1:{metrics_port}",
                                   f"--model_root={os.path.join(ROOT, 'models')}",
                                   f"--state_dir={state}/s"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = [os.path.join(BIN, "superweight"), f"--server=127.0.0.1:{port}", "--timeout=7200"]
            for _ in range(100):
                if subprocess.run(client + ["health"], capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            subprocess.run(client + ["models"], check=True, capture_output=True)  # opened once
            t0 = time.time()
            out = subprocess.run(client + ["ablate", f"--model={MODEL}", "--json",
                                           f"--tasks={','.join(TASKS)}", f"--max_examples={examples}",
                                           "--settings=prune,scale,outliers,restore_sa"] +
                                 os.environ.get("BENCH_ABLATE_FLAGS", "").split(),
                                 check=True, capture_output=True, text=True)
            engine_s = time.time() - t0
            with open(f"/proc/{server.pid}/stat") as f:  # the server's CPU time: less noisy
                fields = f.read().rsplit(")", 1)[1].split()
            server_cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            matmuls = matmul_totals(metrics_port)
        finally:
            server.terminate()
            server.wait()
    rows = json.loads(out.stdout)["result"]["rows"]
    # What bounds the job: its matmuls' flops at the rate they ran (an older build without the
    # counters reports none).
    if matmuls:
        flops, seconds = matmuls
        print(f"matmuls: {flops / 1e12:.2f} TFLOP in {seconds:.1f} s ({flops / seconds / 1e9:.0f} "
              f"GFLOP/s, weight conversion included), {100 * seconds / engine_s:.0f}% of the job's "
              f"wall time")
    if os.environ.get("BENCH_ABLATE_JSON"):
        with open(os.environ["BENCH_ABLATE_JSON"], "w") as f:
            f.write(out.stdout)
    if os.environ.get("BENCH_ABLATE_LMEVAL", "1") == "0":
        print(f"Ablate, {len(rows)} settings x {examples} examples ({threads} threads, "
              f"{os.environ.get('BENCH_ABLATE_FLAGS', 'f32')}): {engine_s:.1f} s, server CPU "
              f"{server_cpu_s:.1f} s")
        return
    lmeval = subprocess.run([os.path.join(ROOT, ".venv-lmeval", "bin", "python"),
                             os.path.join(ROOT, "tools", "lmeval_oracle.py"),
                             os.path.join(ROOT, "models", MODEL), ",".join(TASKS),
                             os.path.join(ROOT, "server", "data", "eval"), str(examples)],
                            env=dict(peer_env(), OMP_NUM_THREADS=str(threads)),
                            capture_output=True, text=True)
    if lmeval.returncode != 0:
        sys.exit(lmeval.stderr[-2000:])
    lmeval_s = json.loads(lmeval.stdout.strip().splitlines()[-1])["seconds"]
    # The fair comparison is lm-eval once per row of the table: every ablated model costs it
    # what the intact one does (the same passes over the same examples), so its intact row's
    # time stands for each.
    print(f"Ablate, {len(rows)} settings x {len(TASKS)} tasks x {examples} examples (f32, {threads} "
          f"threads): engine {engine_s:.0f} s ({engine_s / len(rows):.0f} s a setting, Locate "
          f"included); lm-eval 0.4.9 on transformers, the intact row alone: {lmeval_s:.0f} s, "
          f"once per row: {lmeval_s * len(rows):.0f} s; the whole job "
          f"{lmeval_s * len(rows) / engine_s:.1f}x faster than lm-eval once per row "
          f"(whole job / lm-eval's intact row = {engine_s / lmeval_s:.2f})")


if __name__ == "__main__":
    main()
