"""Scaling out on a shared PostgreSQL job store, measured on this machine in one run:

1. An Ablate job on one replica (the file store, every core) against the same job fanned out
   over two replicas sharing a PostgreSQL store, each pinned to half the cores: wall times,
   their ratio, and the fan-out overhead at equal total cores. The parts' own times project the
   job's time on N boxes (longest-part-first onto N replicas).
2. The PostgreSQL store against the file store for many tiny jobs (a few-token Score each):
   submit-to-start latency p50/p99 and jobs per second, every job submitted without waiting.

  scaleout_bench.py [--tiny_jobs=1000] [--max_examples=40] [--json=FILE]
PostgreSQL 15 from Debian (tools/setup.sh); a throw-away cluster on loopback, removed at the end.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.path.join(ROOT, "build", "bin")
PG_SCRATCH = os.path.join(ROOT, "tools", "pg-scratch.sh")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    def __init__(self, model_root, cpus, threads, store_url=None, state_dir=None):
        self.port = free_port()
        args = ["taskset", "-c", cpus, os.path.join(BIN, "superweightd"),
                f"--listen=127.0.0.1:{self.port}", f"--model_root={model_root}"]
        if state_dir:
            args.append(f"--state_dir={state_dir}")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if store_url:
            env["SUPERWEIGHT_JOB_STORE"] = store_url
        self.proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if self.client("models", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("replica did not start")

    def client(self, *args, check=True):
        return subprocess.run([os.path.join(BIN, "superweight"), f"--server=127.0.0.1:{self.port}",
                               *args], capture_output=True, text=True, check=check)

    def call(self, *args):
        return json.loads(self.client(*args, "--json").stdout)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def psql(url, sql):
    return subprocess.run(["psql", "-qAt", url, "-c", sql], check=True, capture_output=True,
                          text=True).stdout.strip()


def database(cluster_url, name):
    psql(cluster_url, f"CREATE DATABASE {name}")
    return cluster_url.rsplit("/", 1)[0] + "/" + name


def project(part_seconds, boxes):
    """The job's wall time on `boxes` replicas: longest part first onto the least loaded."""
    loads = [0.0] * boxes
    for t in sorted(part_seconds, reverse=True):
        loads[loads.index(min(loads))] += t
    return max(loads)


def ablate_fanout(model_root, cluster_url, max_examples):
    cores = os.cpu_count()
    half = max(1, cores // 2)
    flags = ["ablate", "--model=model.gguf", "--super_weights=11,507,1229",
             "--settings=prune,scale", "--scales=0.5,2", "--tasks=wikitext2,piqa,arc_easy",
             f"--max_examples={max_examples}", "--window=256", "--max_windows=8"]
    with tempfile.TemporaryDirectory() as state:
        one = Replica(model_root, f"0-{cores - 1}", cores, state_dir=state)
        try:
            one.call(*flags[:-3], "--max_examples=1", "--window=64", "--max_windows=1")  # warm
            t0 = time.time()
            alone = one.call(*flags)
            single_s = time.time() - t0
        finally:
            one.stop()
    url = database(cluster_url, "fanout")
    two = [Replica(model_root, f"0-{half - 1}", half, store_url=url),
           Replica(model_root, f"{half}-{cores - 1}", cores - half, store_url=url)]
    try:
        for r in two:  # each opens the model once, as the single replica did
            r.call(*flags[:-3], "--max_examples=1", "--window=64", "--max_windows=1")
        t0 = time.time()
        fanned = two[0].call(*flags)
        fanned_s = time.time() - t0
        parent = int(fanned["job_id"].split("-")[1])
        parts = psql(url, "SELECT extract(epoch from finished_at - started_at) FROM "
                          f"superweight_jobs WHERE parent_seq = {parent} ORDER BY part").split()
        part_s = [float(p) for p in parts]
    finally:
        for r in two:
            r.stop()
    assert fanned["result"]["rows"] == alone["result"]["rows"], "fan-out changed the table"
    return {"rows": len(alone["result"]["rows"]), "parts": len(part_s),
            "single_replica_s": single_s, "two_replicas_fanned_s": fanned_s,
            "speedup": single_s / fanned_s,
            "fanout_overhead": fanned_s / single_s - 1,
            "part_s": part_s,
            "projected_s": {n: project(part_s, n) for n in (1, 2, 4, 8)}}


def tiny_jobs(model_root, cluster_url, jobs):
    """Submit-to-start on an idle queue (100 jobs one after another), then jobs per second for
    `jobs` submitted at once, on each store."""
    text = "Once upon a time"
    out = {}
    for store in ("files", "postgresql"):
        with tempfile.TemporaryDirectory() as state:
            url = database(cluster_url, "tiny") if store == "postgresql" else None
            r = Replica(model_root, f"0-{os.cpu_count() - 1}", os.cpu_count(), store_url=url,
                        state_dir=None if url else state)
            try:
                r.call("score", "--model=tiny", f"--text={text}")  # open the model
                for i in range(100):
                    r.call("score", "--model=tiny", f"--text={text}, {i}.")
                waits = sorted(int(j["started_unix_ms"]) - int(j["created_unix_ms"])
                               for j in r.call("jobs", "--model=tiny")["jobs"])
                t0 = time.time()
                for i in range(jobs):
                    last = r.client("score", "--model=tiny", f"--text={text} {i}.",
                                    "--no_wait").stdout.strip()
                # Jobs start in submission order: the last one done, all are.
                assert "SUCCEEDED" in r.client("watch", f"--job={last}").stdout.splitlines()[-1]
                wall = time.time() - t0
            finally:
                r.stop()
        pct = lambda p: waits[min(len(waits) - 1, int(p * len(waits)))]
        out[store] = {"jobs": jobs, "jobs_per_s": jobs / wall,
                      "submit_to_start_p50_ms": pct(0.5), "submit_to_start_p99_ms": pct(0.99)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny_jobs", type=int, default=1000)
    ap.add_argument("--max_examples", type=int, default=40)
    ap.add_argument("--json")
    args = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="superweight-bench-pg-")
    os.chmod(scratch, 0o755)
    model_root = os.path.join(scratch, "models")
    os.makedirs(model_root)
    shutil.copy(MODEL, os.path.join(model_root, "model.gguf"))  # a link out of the root is refused
    shutil.copytree(os.path.join(ROOT, "testdata", "hf_tinystories_656k"),
                    os.path.join(model_root, "tiny"))
    cluster = os.path.join(scratch, "cluster")
    url = subprocess.run([PG_SCRATCH, "start", cluster, str(free_port())], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        result = {"cpu": subprocess.run([os.path.join(BIN, "superweight-engine"), "cpu"],
                                        capture_output=True, text=True).stdout.strip(),
                  "fanout": ablate_fanout(model_root, url, args.max_examples),
                  "tiny_jobs": tiny_jobs(model_root, url, args.tiny_jobs)}
    finally:
        subprocess.run([PG_SCRATCH, "stop", cluster])
        shutil.rmtree(scratch, ignore_errors=True)
    f = result["fanout"]
    print(f"Ablate, {f['rows']} rows in {f['parts']} parts: one replica {f['single_replica_s']:.1f} s, "
          f"two replicas (half the cores each) {f['two_replicas_fanned_s']:.1f} s: "
          f"x{f['speedup']:.2f}, fan-out overhead {100 * f['fanout_overhead']:+.1f}%")
    print("  projected from the parts' times: " +
          ", ".join(f"{n} box(es) {t:.1f} s" for n, t in f["projected_s"].items()))
    for store, t in result["tiny_jobs"].items():
        print(f"{t['jobs']} tiny jobs, {store} store: {t['jobs_per_s']:.1f} jobs/s, submit-to-start "
              f"p50 {t['submit_to_start_p50_ms']} ms, p99 {t['submit_to_start_p99_ms']} ms")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    sys.exit(main())
