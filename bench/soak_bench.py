"""Soak and fault benchmark of the service: the real superweightd on loopback, driven by the real
client binary (build/bin/superweight), one process per call, as a user would.

Soak run: one server (a fresh temporary --state_dir, --metrics_listen on), 8 client threads for
--seconds, each picking at random among
  score    a synchronous Score of a short token list (8..64 ids), sometimes with the super
           weight zeroed; its perplexity checked against the same input scored alone at warm-up
  locate   a synchronous Locate of a short WikiText-2 snippet, confirmation skipped (1 in 20
           confirmed: that one also scores the 16 KiB confirmation text); the candidates checked
           against warm-up's
  watch    Score --no_wait (a token list, or 2 windows of 128 tokens), then watch to the end:
           SUCCEEDED with the warm-up's perplexity
  cancel   Score --no_wait of 8 windows of 128 tokens, cancel after 0..0.8 s: the cancel answers
           CANCELLED (or SUCCEEDED where the job beat it), and watch then agrees
  jobs     the job list; every state a known one
  health   SERVING
An error is an unexpected exit code, a wrong state, a result unlike the warm-up's, a call past
its timeout or the server gone. Warm-up: the reference results, one call at a time, then the
same 8 clients for --warm_seconds (their errors count, their calls and latencies do not), so
that the buffers of concurrent batches exist before `start`. The server's VmRSS and Threads
(/proc/PID/status; RssAnon and RssFile apart) are sampled every second: at start (after
warm-up), at the end (clients stopped, 1 s idle) and the maximum. Latency is the client
process's wall time (process start and the gRPC connection included), per verb; watch is
submit + watch, cancel is the cancel call alone. --server_env sets the server's environment
(e.g. OMP_WAIT_POLICY=passive, MALLOC_ARENA_MAX=1: see docs/service.md, "Soak and kill -9").

Fault run: 20 jobs of mixed kinds (short scores and skip-confirmation locates that take well under
a second; windowed scores, confirmed locates, checks, an ablate and a quantize that take seconds),
each submitted --no_wait to a server on one --state_dir and followed by a watch (on a pty, so
each update arrives as sent). The server is killed with SIGKILL at a kill point: `before` (just
after the submit returned), `running` (a random point of the job's expected run) or `after` (as
soon as the watch reported the job finished), then restarted on the same --state_dir, and every
job submitted so far is read back with watch. The documented behaviour (docs/service.md, server/jobs/
job_queue.h): finished jobs survive a restart; a job queued or running when the server died
reads FAILED (ABORTED, "the server stopped while this job was queued or running"). Counted:
results lost (a job seen SUCCEEDED before a kill that is not SUCCEEDED with the same record
after), wrongly reported (QUEUED/RUNNING after a restart, SUCCEEDED without a result, CANCELLED,
a different record than at the previous restart, FAILED other than ABORTED, an id handed out
twice). The server must also stop cleanly (SIGTERM, exit 0) at the end.

Queue run: --queued_jobs default Ablate requests (every evaluation set) queued behind a running
job, then cancelled; the server's RSS before, with them queued and after (goals: under 200 MB
for 256, back within 10%).

Prints a summary table (--json: also written there, with RSS samples every 10 s); exits 1 where
the soak saw an error or the fault run a lost result or a wrongly reported job.

    .venv/bin/python bench/soak_bench.py [--seconds=600] [--warm_seconds=30] [--clients=8]
        [--fault_jobs=20] [--queued_jobs=256] [--skip_soak] [--skip_queue] [--skip_fault] [--seed=7] [--model=PATH] [--server_env=NAME=VALUE]
        [--json=PATH] [--keep]
"""
import argparse
import json
import math
import os
import pty
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.path.join(ROOT, "build", "bin")
WIKI = os.path.join(ROOT, "testdata", "text", "wiki.test.raw")
MODEL = "smollm2.gguf"  # its name under the temporary --model_root
SUPER_WEIGHT = "11,507,1229"  # SmolLM2-135M's (layers[11].mlp.down_proj[507, 1229])
CALL_TIMEOUT = 300  # seconds a client call may take before it counts as hung
FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")
ABORTED = 10  # google.rpc.Code


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_json_stream(text):
    """The objects of a stream of JSON values (watch --json prints one per update)."""
    dec, out, i = json.JSONDecoder(), [], 0
    text = text.replace("\r", "")
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        obj, i = dec.raw_decode(text, i)
        out.append(obj)


def proc_status(pid):
    """VmRSS, Threads, RssAnon and RssFile (KiB but Threads) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        kib = lambda k: int(fields[k].split()[0])
        return kib("VmRSS"), int(fields["Threads"]), kib("RssAnon"), kib("RssFile")
    except (OSError, KeyError, ValueError):
        return None


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[max(0, math.ceil(p * len(v)) - 1)]


def result_of(job):
    """The job's result (the proto's oneof), or None."""
    for k in ("locate", "score", "ablate", "quantize", "check"):
        if k in job:
            return job[k]
    return None


def coordinates(locate):
    return sorted((int(s["coordinate"].get("layer", 0)), int(s["coordinate"].get("row", 0)),
                   int(s["coordinate"].get("col", 0))) for s in locate.get("super_weights", []))


class Server:
    def __init__(self, model_root, state_dir, log_path, metrics=False, env=None, extra=()):
        self.model_root, self.state_dir, self.log_path = model_root, state_dir, log_path
        self.metrics = metrics
        self.extra = list(extra)
        self.env = {**os.environ, **(env or {})}
        self.proc = None
        self.log = None

    def start(self):
        self.port = free_port()
        self.metrics_port = free_port() if self.metrics else None
        args = [os.path.join(BIN, "superweightd"), f"--listen=127.0.0.1:{self.port}",
                f"--model_root={self.model_root}", f"--state_dir={self.state_dir}"]
        if self.metrics:
            args.append(f"--metrics_listen=127.0.0.1:{self.metrics_port}")
        args += self.extra
        self.log = open(self.log_path, "ab")
        t0 = time.time()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        while time.time() - t0 < 60:
            out = self.client("health", timeout=2)
            if out[0] == 0 and "SERVING" in out[1] and "NOT_SERVING" not in out[1]:
                return time.time() - t0
            if self.proc.poll() is not None:
                raise RuntimeError(f"superweightd exited {self.proc.returncode} at start; "
                                   f"see {self.log_path}")
            time.sleep(0.05)
        raise RuntimeError("superweightd did not come up in 60 s")

    def client(self, verb, *flags, timeout=CALL_TIMEOUT):
        """(exit code, stdout, stderr, seconds); exit code None when the call hung."""
        cmd = [os.path.join(BIN, "superweight"), f"--server=127.0.0.1:{self.port}", verb,
               f"--timeout={timeout}", *flags]
        t0 = time.time()
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30)
            return out.returncode, out.stdout, out.stderr, time.time() - t0
        except subprocess.TimeoutExpired as e:
            return None, e.stdout or "", f"hung past {timeout + 30} s", time.time() - t0

    def call(self, verb, *flags, timeout=CALL_TIMEOUT):
        rc, out, err, _ = self.client(verb, "--json", *flags, timeout=timeout)
        if rc != 0:
            raise RuntimeError(f"{verb} {' '.join(flags)[:200]} -> {rc}: {err.strip()}")
        return json.loads(out)

    def metric(self, name):
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                          timeout=5).read().decode()
        except OSError:
            return None
        for line in body.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self):
        """SIGTERM; the exit code (None: still running after 60 s, then killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.log.close()
        return rc


def wiki_snippets(rng, n, lo=60, hi=300):
    with open(WIKI, encoding="utf-8") as f:
        lines = [l.strip() for l in f if lo <= len(l.strip()) <= hi and not l.strip().startswith("=")]
    return rng.sample(lines, n)


# ---------------------------------------------------------------------------------------- soak


class Soak:
    def __init__(self, server, rng, vocab, seconds, clients):
        self.s, self.rng, self.seconds, self.clients = server, rng, seconds, clients
        self.lock = threading.Lock()
        self.latency = {}  # verb -> [seconds]
        self.ops = {}  # verb -> count
        self.errors = {}  # verb -> count
        self.error_samples = []
        self.outcomes = {}  # e.g. cancel outcome -> count
        self.samples = []  # (t, rss KiB, threads, anonymous KiB, file-backed KiB)
        self.stop_event = threading.Event()
        # Fixed inputs, their results recorded at warm-up, one at a time.
        self.token_lists = [",".join(str(rng.randrange(3, vocab)) for _ in range(rng.randint(8, 64)))
                            for _ in range(12)]
        self.snippets = wiki_snippets(rng, 8)
        self.ref_score = {}  # (ids, zero) -> perplexity
        self.ref_window = None  # perplexity of the windowed watch job
        self.ref_cancel = None  # perplexity of the cancel job, when it wins the race
        self.ref_locate = {}  # snippet -> candidate coordinates

    # Inputs of each kind of call, as client flags.
    @staticmethod
    def score_flags(ids, zero):
        return [f"--model={MODEL}", f"--token_ids={ids}"] + ([f"--zero={SUPER_WEIGHT}"] if zero else [])

    WINDOW_FLAGS = [f"--model={MODEL}", f"--text_file={WIKI}", "--window=128", "--max_windows=2"]
    CANCEL_FLAGS = [f"--model={MODEL}", f"--text_file={WIKI}", "--window=128", "--max_windows=8"]

    def warm_up(self):
        for ids in self.token_lists:
            for zero in (False, True):
                r = self.s.call("score", *self.score_flags(ids, zero))["result"]
                self.ref_score[(ids, zero)] = r["perplexity"]
        self.ref_window = self.s.call("score", *self.WINDOW_FLAGS)["result"]["perplexity"]
        self.ref_cancel = self.s.call("score", *self.CANCEL_FLAGS)["result"]["perplexity"]
        for text in self.snippets:
            r = self.s.call("locate", f"--model={MODEL}", f"--text={text}", "--skip_confirmation")
            self.ref_locate[text] = coordinates(r["result"])
        self.s.call("locate", f"--model={MODEL}", f"--text={self.snippets[0]}")
        self.s.call("jobs")

    def note(self, verb, seconds, error=None, outcome=None):
        with self.lock:
            self.ops[verb] = self.ops.get(verb, 0) + 1
            if seconds is not None:
                self.latency.setdefault(verb, []).append(seconds)
            if outcome:
                self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            if error:
                self.errors[verb] = self.errors.get(verb, 0) + 1
                if len(self.error_samples) < 20:
                    self.error_samples.append(f"{verb}: {error}"[:600])

    @staticmethod
    def close(a, b, rel=1e-4):
        return abs(a - b) <= rel * max(abs(a), abs(b))

    def op_score(self, rng):
        ids, zero = rng.choice(self.token_lists), rng.random() < 0.3
        rc, out, err, dt = self.s.client("score", "--json", *self.score_flags(ids, zero))
        if rc != 0:
            return self.note("score", dt, f"exit {rc}: {err.strip()}")
        r = json.loads(out)["result"]
        n = len(ids.split(","))
        ref = self.ref_score[(ids, zero)]
        if len(r.get("logprobs", [])) != n - 1 or not self.close(r["perplexity"], ref):
            return self.note("score", dt, f"result {r.get('perplexity')} over {len(r.get('logprobs', []))} "
                                          f"logprobs, warm-up {self.ref_score[(ids, zero)]} over {n - 1}")
        self.note("score", dt)

    def op_locate(self, rng):
        text = rng.choice(self.snippets)
        confirm = rng.random() < 0.05
        flags = [f"--model={MODEL}", f"--text={text}"] + ([] if confirm else ["--skip_confirmation"])
        rc, out, err, dt = self.s.client("locate", "--json", *flags)
        if rc != 0:
            return self.note("locate", dt, f"exit {rc}: {err.strip()}")
        r = json.loads(out)["result"]
        got = coordinates(r)
        if confirm:
            # Confirmed ones are a subset of the candidates; SmolLM2's super weight is one.
            if not set(got) <= set(self.ref_locate[text]):
                return self.note("locate", dt, f"confirmed {got} not among warm-up's candidates "
                                               f"{self.ref_locate[text]}")
            return self.note("locate", dt, outcome="locate confirmed")
        if got != self.ref_locate[text]:
            return self.note("locate", dt, f"candidates {got}, warm-up {self.ref_locate[text]}")
        self.note("locate", dt, outcome="locate candidates")

    def submit(self, flags):
        rc, out, err, dt = self.s.client("score", "--no_wait", *flags)
        self.note("submit", dt, None if rc == 0 and out.strip().startswith("job-")
                  else f"exit {rc}: {out.strip()} {err.strip()}")
        return out.strip() if rc == 0 else None

    def watch(self, job_id):
        """(exit code, final job or None, stderr, seconds)"""
        rc, out, err, dt = self.s.client("watch", "--json", f"--job={job_id}")
        try:
            jobs = parse_json_stream(out)
        except ValueError:
            jobs = []
        return rc, (jobs[-1] if jobs else None), err, dt

    def op_watch(self, rng):
        windowed = rng.random() < 0.3
        if windowed:
            flags, ref = self.WINDOW_FLAGS, self.ref_window
        else:
            ids = rng.choice(self.token_lists)
            flags, ref = self.score_flags(ids, False), self.ref_score[(ids, False)]
        t0 = time.time()
        job_id = self.submit(flags)
        if job_id is None:
            return
        rc, job, err, _ = self.watch(job_id)
        dt = time.time() - t0
        if rc != 0 or job is None or job.get("state") != "SUCCEEDED":
            return self.note("watch", dt, f"{job_id}: exit {rc}, state {job and job.get('state')}: "
                                          f"{err.strip()}")
        if "score" not in job or not self.close(job["score"]["perplexity"], ref):
            return self.note("watch", dt, f"{job_id}: result {result_of(job)}, warm-up {ref}")
        self.note("watch", dt)

    def op_cancel(self, rng):
        job_id = self.submit(self.CANCEL_FLAGS)
        if job_id is None:
            return
        time.sleep(rng.uniform(0, 0.8))
        rc, out, err, dt = self.s.client("cancel", "--json", f"--job={job_id}")
        if rc != 0:
            return self.note("cancel", dt, f"{job_id}: exit {rc}: {err.strip()}")
        answered = json.loads(out).get("state")
        if answered not in ("CANCELLED", "SUCCEEDED", "RUNNING"):  # RUNNING: still stopping after 5 s
            return self.note("cancel", dt, f"{job_id}: cancel answered {answered}")
        wrc, job, werr, _ = self.watch(job_id)
        final = job and job.get("state")
        if answered != "RUNNING" and final != answered:
            return self.note("cancel", dt, f"{job_id}: cancel answered {answered}, watch {final}")
        if final == "CANCELLED":
            if wrc != 1 or "CANCELLED" not in werr or result_of(job) is not None:
                return self.note("cancel", dt, f"{job_id}: CANCELLED, watch exit {wrc}, {werr.strip()}")
        elif final == "SUCCEEDED":
            if wrc != 0 or "score" not in job or not self.close(job["score"]["perplexity"], self.ref_cancel):
                return self.note("cancel", dt, f"{job_id}: SUCCEEDED, watch exit {wrc}, result "
                                               f"{result_of(job)}, warm-up {self.ref_cancel}")
        else:
            return self.note("cancel", dt, f"{job_id}: watch ended {final} (exit {wrc}): {werr.strip()}")
        self.note("cancel", dt, outcome=f"cancel -> {final}" + (" (late)" if answered == "RUNNING" else ""))

    def op_jobs(self, rng):
        rc, out, err, dt = self.s.client("jobs", "--json")
        if rc != 0:
            return self.note("jobs", dt, f"exit {rc}: {err.strip()}")
        states = [j.get("state") for j in json.loads(out).get("jobs", [])]
        bad = [s for s in states if s not in FINAL_STATES + ("QUEUED", "RUNNING")]
        self.note("jobs", dt, f"states {bad}" if bad or not states else None)

    def op_health(self, rng):
        rc, out, err, dt = self.s.client("health")
        self.note("health", dt, None if rc == 0 and out.strip() == "SERVING" else f"exit {rc}: {out} {err}")

    OPS = (("score", 35), ("locate", 20), ("watch", 20), ("cancel", 15), ("jobs", 5), ("health", 5))

    def client_loop(self, seed, deadline):
        rng = random.Random(seed)
        names = [n for n, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        while time.time() < deadline and not self.stop_event.is_set():
            name = rng.choices(names, weights)[0]
            try:
                getattr(self, "op_" + name)(rng)
            except Exception as e:  # a malformed answer: an error of that verb, and go on
                self.note(name, None, f"{type(e).__name__}: {e}")

    def sampler(self, t0):
        while not self.stop_event.wait(1.0):
            st = proc_status(self.s.proc.pid)
            if st is None or self.s.proc.poll() is not None:
                self.note("server", None, f"superweightd exited {self.s.proc.poll()} at "
                                          f"{time.time() - t0:.0f} s")
                self.stop_event.set()
                return
            self.samples.append((time.time() - t0, *st))

    def run_clients(self, seconds, label, t0):
        """The clients for `seconds` (each ends the call it is in); wall seconds."""
        t1 = time.time()
        deadline = t1 + seconds
        threads = [threading.Thread(target=self.client_loop, args=(self.rng.randrange(1 << 30), deadline))
                   for _ in range(self.clients)]
        for t in threads:
            t.start()
        last_print = t1
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            if time.time() - last_print >= 60:
                last_print = time.time()
                with self.lock:
                    done, errs = sum(self.ops.values()), sum(self.errors.values())
                smp = self.samples[-1]
                print(f"  {label} {time.time() - t1:5.0f} s: {done} calls, {errs} errors, "
                      f"RSS {smp[1] / 1024:.1f} MiB, {smp[2]} threads", flush=True)
        for t in threads:
            t.join()
        return time.time() - t1

    def run(self, warm_seconds):
        t_warm = time.time()
        self.warm_up()
        after_references = proc_status(self.s.proc.pid)
        t0 = time.time()
        sampler = threading.Thread(target=self.sampler, args=(t0,), daemon=True)
        sampler.start()
        warm_errors = 0
        if warm_seconds > 0:
            self.run_clients(warm_seconds, "warm-up", t0)
            with self.lock:  # errors stay counted; calls and latencies start again
                warm_errors = sum(self.errors.values())
                self.ops, self.latency, self.outcomes = {}, {}, {}
        warm_s = time.time() - t_warm
        start = proc_status(self.s.proc.pid)
        jobs_start = self.s.metric("superweight_jobs_stored")
        t_start = time.time() - t0
        self.samples.append((t_start, *start))
        wall = self.run_clients(self.seconds, "soak", t0)
        self.stop_event.set()
        sampler.join()
        time.sleep(1.0)  # the server idle again
        end = proc_status(self.s.proc.pid)
        if end is not None:
            self.samples.append((time.time() - t0, *end))
        jobs_end = self.s.metric("superweight_jobs_stored")
        measured = [x for x in self.samples if x[0] >= t_start]
        rss = [x[1] for x in measured]
        thr = [x[2] for x in measured]
        verbs = {}
        for verb in ("score", "locate", "watch", "cancel", "submit", "jobs", "health", "server"):
            if verb not in self.ops and verb not in self.errors:
                continue
            lat = self.latency.get(verb, [])
            verbs[verb] = {"ops": self.ops.get(verb, 0), "errors": self.errors.get(verb, 0),
                           "p50_s": percentile(lat, 0.5), "p99_s": percentile(lat, 0.99),
                           "max_s": max(lat) if lat else float("nan")}
        # The second half's drift: growth that the retention (1000 jobs) should have stopped.
        half = [x for x in measured if x[0] >= t_start + wall / 2]
        return {
            "seconds": round(wall, 1), "clients": self.clients, "warm_up_s": round(warm_s, 1),
            "warm_up_errors": warm_errors,
            "ops": sum(v["ops"] for k, v in verbs.items() if k != "server"),
            "errors": sum(self.errors.values()), "error_samples": self.error_samples,
            "verbs": verbs, "outcomes": self.outcomes,
            "rss_kib": {"after_references": after_references[0], "start": start[0],
                        "end": end[0] if end else None, "max": max(rss),
                        "second_half_start": half[0][1] if half else None},
            "threads": {"start": start[1], "end": end[1] if end else None, "max": max(thr)},
            "rss_growth": (end[0] - start[0]) / start[0] if end else None,
            "jobs_stored": {"start": jobs_start, "end": jobs_end},
            "rss_anon_kib": {"start": start[2], "end": end[2] if end else None,
                             "max": max(x[3] for x in measured)},
            "rss_file_kib": {"start": start[3], "end": end[3] if end else None},
            # (seconds, VmRSS KiB, threads, RssAnon KiB, RssFile KiB), every 10 s, and the last
            "samples": [(round(x[0], 1), *x[1:]) for x in self.samples[::10]] + [self.samples[-1]],
        }


# --------------------------------------------------------------------------------------- fault


def fault_specs(rng):
    """(name, client verb, flags, expected seconds alone on this machine)"""
    snippet = wiki_snippets(rng, 1)[0]
    ids = ",".join(str(rng.randrange(3, 49000)) for _ in range(16))
    eval_small = ["--tasks=piqa", "--max_examples=4", "--window=128", "--max_windows=1"]
    return [
        ("score-short", "score", [f"--token_ids={ids}"], 0.1),
        ("locate-skip", "locate", [f"--text={snippet}", "--skip_confirmation"], 0.1),
        ("score-windows", "score", [f"--text_file={WIKI}", "--window=512", "--max_windows=6"], 3.0),
        ("locate", "locate", [f"--text={snippet}"], 3.0),
        ("check", "check", [f"--reference={MODEL}", "--window=128", "--max_windows=2"], 3.0),
        ("ablate", "ablate", [f"--super_weights={SUPER_WEIGHT}", "--settings=prune", *eval_small], 5.0),
        ("quantize", "quantize", [f"--super_weights={SUPER_WEIGHT}", "--bits=4", "--block_size=tensor",
                                  *eval_small], 6.0),
    ]


class PtyWatch:
    """`superweight watch --json` with its stdout on a pty (line-buffered there, so each update
    arrives as the server sends it); the states it saw, with times."""

    def __init__(self, server, job_id):
        master, slave = pty.openpty()
        self.proc = subprocess.Popen([os.path.join(BIN, "superweight"), f"--server=127.0.0.1:{server.port}",
                                      "watch", "--json", f"--job={job_id}"],
                                     stdout=slave, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        os.close(slave)
        self.master = master
        self.lock = threading.Lock()
        self.jobs = []  # (time, job)
        self.changed = threading.Condition(self.lock)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        buf, dec = "", json.JSONDecoder()
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk.decode(errors="replace").replace("\r", "")
            while True:
                stripped = buf.lstrip()
                try:
                    obj, end = dec.raw_decode(stripped)
                except ValueError:
                    break
                buf = stripped[end:]
                with self.changed:
                    self.jobs.append((time.time(), obj))
                    self.changed.notify_all()
        os.close(self.master)
        with self.changed:
            self.changed.notify_all()

    def last(self):
        with self.lock:
            return self.jobs[-1][1] if self.jobs else None

    def wait_for(self, predicate, timeout):
        deadline = time.time() + timeout
        with self.changed:
            while True:
                if self.jobs and predicate(self.jobs[-1][1]):
                    return True
                left = deadline - time.time()
                if left <= 0 or (not self.reader.is_alive() and self.proc.poll() is not None):
                    return False
                self.changed.wait(min(left, 0.2))

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(timeout=5)


def fault_run(model_root, tmp, rng, n_jobs, env):
    state_dir = os.path.join(tmp, "fault-state")
    server = Server(model_root, state_dir, os.path.join(tmp, "fault-server.log"), env=env)
    restart_s = [server.start()]
    specs = fault_specs(rng)
    order = [specs[i % len(specs)] for i in range(n_jobs)]
    rng.shuffle(order)
    points = [("before", "running", "after")[i % 3] for i in range(n_jobs)]
    rng.shuffle(points)
    known = {}  # id -> {"spec", "point", "seen", "record"}: "record" the job as last read back
    lost, wrong, problems = 0, 0, []
    at_kill = {}  # state seen at the kill -> count
    after_restart = {}  # state read back after the restart that followed its kill -> count
    unobserved_success = 0
    print(f"  fault: {n_jobs} jobs, kill -9 at a kill point, restart on the same --state_dir", flush=True)
    for i, ((name, verb, flags, expected), point) in enumerate(zip(order, points)):
        rc, out, err, _ = server.client(verb, f"--model={MODEL}", "--no_wait", *flags)
        if rc != 0 or not out.strip().startswith("job-"):
            wrong += 1
            problems.append(f"job {i} ({name}): submit exit {rc}: {err.strip()}")
            continue
        job_id = out.strip()
        if job_id in known:
            wrong += 1
            problems.append(f"job {i} ({name}): id {job_id} handed out again after a restart")
        watch = PtyWatch(server, job_id)
        if point == "before":
            time.sleep(rng.uniform(0, 0.05))
        elif point == "running":
            watch.wait_for(lambda j: j.get("state") != "QUEUED", 30)
            time.sleep(rng.uniform(0.1, 0.9) * expected)
        else:
            if not watch.wait_for(lambda j: j.get("state") in FINAL_STATES, 120):
                problems.append(f"job {i} ({name}) {job_id}: not finished in 120 s")
        seen = watch.last()
        server.kill9()
        watch.close()
        seen_state = seen.get("state") if seen else "unseen"
        at_kill[seen_state] = at_kill.get(seen_state, 0) + 1
        entry = {"spec": name, "point": point, "seen": seen_state,
                 "seen_record": seen if seen_state == "SUCCEEDED" else None, "record": None}
        known[job_id] = entry
        restart_s.append(server.start())
        # Nothing queued or running after a restart, before anything new is submitted.
        listed = server.call("jobs")
        for j in listed.get("jobs", []):
            if j.get("state") not in FINAL_STATES:
                wrong += 1
                problems.append(f"after restart {i + 1}: {j['id']} listed {j.get('state')}")
        for jid, e in known.items():
            rc, out, err, _ = server.client("watch", "--json", f"--job={jid}", timeout=30)
            try:
                jobs = parse_json_stream(out)
            except ValueError:
                jobs = []
            job = jobs[-1] if jobs else None
            state = job.get("state") if job else None
            why = None
            if e["seen"] == "SUCCEEDED":
                if state != "SUCCEEDED" or result_of(job) is None:
                    lost += 1
                    problems.append(f"after restart {i + 1}: {jid} ({e['spec']}) was SUCCEEDED before a "
                                    f"kill, now {state} (watch exit {rc}: {err.strip()}): result lost")
                    e["seen"] = "lost"
                    continue
                if job != e["seen_record"]:
                    why = "a different record than the one seen SUCCEEDED before the kill"
            if why is not None:
                pass
            elif job is None:
                why = f"not readable (watch exit {rc}: {err.strip()})"
            elif state not in FINAL_STATES:
                why = f"{state} after a restart"
            elif state == "SUCCEEDED" and result_of(job) is None:
                why = "SUCCEEDED without a result"
            elif state == "CANCELLED":
                why = "CANCELLED, never cancelled"
            elif state == "FAILED" and (job.get("error_code") != ABORTED or
                                        "stopped" not in job.get("error_message", "")):
                why = (f"FAILED otherwise than by the crash: {job.get('error_code')} "
                       f"{job.get('error_message')}")
            elif (rc == 0) != (state == "SUCCEEDED"):
                why = f"watch exit {rc} for {state}"
            elif e["record"] is not None and job != e["record"]:
                why = f"changed since the previous restart: {e['record'].get('state')} -> {state}"
            if why:
                wrong += 1
                problems.append(f"after restart {i + 1}: {jid} ({e['spec']}, killed {e['point']}, seen "
                                f"{e['seen']}): {why}")
            if e["record"] is None and job is not None:  # its first read-back, after its own kill
                after_restart[state] = after_restart.get(state, 0) + 1
                if state == "SUCCEEDED" and e["seen"] != "SUCCEEDED":
                    unobserved_success += 1
            e["record"] = job
        print(f"    {i + 1:2d}/{n_jobs} {job_id} {name:13s} killed {point:7s} (seen {seen_state:9s}) -> "
              f"{e['record'] and e['record'].get('state')}", flush=True)
    stop_rc = server.stop()
    if stop_rc != 0:
        problems.append(f"superweightd exited {stop_rc} on SIGTERM")
    points_count = {}
    for e in known.values():
        points_count[e["point"]] = points_count.get(e["point"], 0) + 1
    return {
        "jobs": len(known), "kill_points": points_count, "state_at_kill": at_kill,
        "state_after_restart": after_restart,
        "succeeded_unobserved": unobserved_success,
        "succeeded_before_kill": sum(1 for e in known.values() if e["seen"] in ("SUCCEEDED", "lost")),
        "results_lost": lost, "wrongly_reported": wrong, "problems": problems,
        "restart_s": {"p50": percentile(restart_s[1:], 0.5), "max": max(restart_s[1:], default=None)},
        "clean_stop_exit": stop_rc,
    }


# ---------------------------------------------------------------------------------------- main


def queued_memory_run(model_root, tmp, n_jobs, env):
    """The server's RSS with n_jobs default Ablate requests queued behind a running job, and after
    they are cancelled: a queued job holds its request, not its evaluation data (which it reads
    when it runs). The running job (a windowed Score of WikiText-2) keeps the worker busy; RSS is
    read once its own buffers are allocated (two samples a second apart within 1%), so the
    figures differ by the queue alone."""
    server = Server(model_root, os.path.join(tmp, "queue-state"), os.path.join(tmp, "queue.log"),
                    env=env, extra=[f"--max_queued_jobs={n_jobs + 8}"])
    server.start()
    try:
        busy = server.call("score", f"--model={MODEL}", f"--text_file={WIKI}", "--window=512",
                           "--no_wait")["job_id"]
        samples = [proc_status(server.proc.pid)[0]]
        for _ in range(120):
            time.sleep(1)
            samples.append(proc_status(server.proc.pid)[0])
            if abs(samples[-1] - samples[-2]) < 0.01 * samples[-1]:
                break
        before = samples[-1]
        t0 = time.time()
        queued = [server.call("ablate", f"--model={MODEL}", f"--super_weights={SUPER_WEIGHT}",
                              "--no_wait")["job_id"] for _ in range(n_jobs)]
        submit_s = time.time() - t0
        held = proc_status(server.proc.pid)[0]
        for job in queued:
            server.call("cancel", f"--job={job}")
        after = proc_status(server.proc.pid)[0]
        busy_state = server.call("cancel", f"--job={busy}")["state"]  # CANCELLED: ran throughout
    finally:
        server.stop()
    return {"jobs": n_jobs, "rss_kib": {"before": before, "queued": held, "after_cancel": after},
            "submit_s": submit_s, "running_job_until_the_end": busy_state == "CANCELLED"}


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except (OSError, StopIteration):
        return "unknown"


def print_summary(res):
    print()
    env = f"; server environment {res['server_env']}" if res["server_env"] else ""
    print(f"CPU: {res['cpu']} ({res['cores']} cores; load average at start "
          f"{res['load_average_at_start'][0]:.1f}, at the end {res['load_average_at_end'][0]:.1f}){env}")
    soak = res.get("soak")
    if soak:
        print(f"\nSoak: {soak['clients']} clients for {soak['seconds']:.0f} s "
              f"(after {soak['warm_up_s']:.0f} s of warm-up), {soak['ops']} calls, "
              f"{soak['errors']} errors ({soak['warm_up_errors']} of "
              f"them in warm-up)")
        print(f"  {'verb':8s} {'ops':>7s} {'errors':>7s} {'p50 s':>8s} {'p99 s':>8s} {'max s':>8s}")
        for verb, v in soak["verbs"].items():
            print(f"  {verb:8s} {v['ops']:7d} {v['errors']:7d} {v['p50_s']:8.3f} {v['p99_s']:8.3f} "
                  f"{v['max_s']:8.3f}")
        r, t = soak["rss_kib"], soak["threads"]
        end_rss = f"{r['end'] / 1024:.1f}" if r["end"] else "gone"
        growth = (f"{100 * soak['rss_growth']:+.1f}%, goal within 10%" if soak["rss_growth"] is not None
                  else "n/a")
        print(f"  server RSS MiB   start {r['start'] / 1024:.1f}  end {end_rss}  max {r['max'] / 1024:.1f}  "
              f"({growth}; at half time {(r['second_half_start'] or 0) / 1024:.1f}; "
              f"after the references, before the warm-up's clients {r['after_references'] / 1024:.1f})")
        a, fb = soak["rss_anon_kib"], soak["rss_file_kib"]
        print(f"  of which anon    start {a['start'] / 1024:.1f}  end {(a['end'] or 0) / 1024:.1f}  "
              f"max {a['max'] / 1024:.1f}; file-backed (the model's map) start {fb['start'] / 1024:.1f}  "
              f"end {(fb['end'] or 0) / 1024:.1f}")
        print(f"  server threads   start {t['start']}  end {t['end']}  max {t['max']}")
        js = soak["jobs_stored"]
        print(f"  jobs stored      start {js['start']:.0f}  end {js['end']:.0f}" if js["end"] is not None
              else "  jobs stored      n/a")
        print(f"  outcomes         {', '.join(f'{k}: {v}' for k, v in sorted(soak['outcomes'].items()))}")
        for e in soak["error_samples"]:
            print(f"  ERROR {e}")
    queue = res.get("queue")
    if queue:
        r = queue["rss_kib"]
        print(f"\nQueue: {queue['jobs']} default Ablate requests queued behind a running job "
              f"(submitted in {queue['submit_s']:.1f} s)")
        print(f"  server RSS MiB   before {r['before'] / 1024:.1f}  with them queued "
              f"{r['queued'] / 1024:.1f} ({(r['queued'] - r['before']) / 1024:+.1f}, goal under "
              f"200)  after cancelling them {r['after_cancel'] / 1024:.1f} "
              f"({100 * (r['after_cancel'] / r['before'] - 1):+.1f}%, goal within 10%)")
    fault = res.get("fault")
    if fault:
        print(f"\nFault: {fault['jobs']} jobs, kill -9 then restart on the same --state_dir")
        print(f"  kill points          {fault['kill_points']}")
        print(f"  state seen at kill   {fault['state_at_kill']}")
        print(f"  state after restart  {fault['state_after_restart']} "
              f"(SUCCEEDED unseen before the kill: {fault['succeeded_unobserved']})")
        print(f"  SUCCEEDED before a kill {fault['succeeded_before_kill']}, results lost "
              f"{fault['results_lost']}, wrongly reported {fault['wrongly_reported']} (goal 0 and 0)")
        rs = fault["restart_s"]
        print(f"  restart to SERVING   p50 {rs['p50']:.2f} s, max {rs['max']:.2f} s; "
              f"SIGTERM at the end: exit {fault['clean_stop_exit']}")
        for p in fault["problems"]:
            print(f"  PROBLEM {p}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--warm_seconds", type=float, default=30)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--fault_jobs", type=int, default=20)
    ap.add_argument("--skip_soak", action="store_true")
    ap.add_argument("--skip_fault", action="store_true")
    ap.add_argument("--queued_jobs", type=int, default=256)
    ap.add_argument("--skip_queue", action="store_true")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--server_env", action="append", default=[], metavar="NAME=VALUE",
                    help="set in the server's environment, e.g. OMP_WAIT_POLICY=passive (repeat for more)")
    ap.add_argument("--json", help="write the summary here as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    tmp = tempfile.mkdtemp(prefix="soak-bench-")
    env = dict(kv.split("=", 1) for kv in a.server_env)
    res = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_at_start": os.getloadavg(),
           "server_env": env}
    failed = False
    try:
        model_root = os.path.join(tmp, "models")
        os.mkdir(model_root)
        dst = os.path.join(model_root, MODEL)
        try:
            os.link(a.model, dst)
        except OSError:
            shutil.copy(a.model, dst)
        vocab = json.loads(subprocess.run([os.path.join(BIN, "superweight-engine"), "info", a.model],
                                          capture_output=True, text=True, check=True).stdout)["vocab"]
        if not a.skip_soak:
            print(f"soak: {a.clients} clients, {a.seconds:.0f} s", flush=True)
            server = Server(model_root, os.path.join(tmp, "soak-state"), os.path.join(tmp, "soak-server.log"),
                            metrics=True, env=env)
            server.start()
            try:
                res["soak"] = Soak(server, rng, vocab, a.seconds, a.clients).run(a.warm_seconds)
            finally:
                rc = server.stop()
            res["soak"]["clean_stop_exit"] = rc
            if rc != 0:
                res["soak"]["error_samples"].append(f"superweightd exited {rc} on SIGTERM")
                res["soak"]["errors"] += 1
            failed |= res["soak"]["errors"] > 0
        if not a.skip_queue:
            print(f"queue: {a.queued_jobs} Ablate requests queued, then cancelled", flush=True)
            res["queue"] = queued_memory_run(model_root, tmp, a.queued_jobs, env)
            r = res["queue"]["rss_kib"]
            failed |= r["queued"] - r["before"] > 200 * 1024 or r["after_cancel"] > 1.1 * r["before"]
        if not a.skip_fault:
            res["fault"] = fault_run(model_root, tmp, rng, a.fault_jobs, env)
            failed |= res["fault"]["results_lost"] > 0 or res["fault"]["wrongly_reported"] > 0
        res["load_average_at_end"] = os.getloadavg()
        print_summary(res)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
    finally:
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
