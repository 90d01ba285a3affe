"""Replicas sharing a PostgreSQL job store: a throw-away PostgreSQL 15 cluster on loopback
(tools/pg-scratch.sh), three superweightd replicas on one database, and the faults a deployment
meets: a replica killed or frozen mid-job, the database restarted or gone, replicas racing."""
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import (BIN, PG_SCRATCH, TESTDATA, Replica, fresh_database, metric, psql,
                      restart_on_one_state_dir)

TEXT = os.path.join(TESTDATA, "text", "wiki.test.raw")
# A Score job of several seconds: long enough to kill, freeze or cancel while it runs.
LONG = ["score", "--model=smollm2.gguf", f"--text_file={TEXT}", "--window=256",
        "--max_windows=8"]
# One that outlasts the queue-wide gauges' report (every 10 s), cancelled once they are seen.
LONGER = LONG[:-1] + ["--max_windows=100"]


def wait_for(predicate, seconds=60):
    t0 = time.time()
    while time.time() - t0 < seconds:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def job(replica, job_id):
    return {j["id"]: j for j in replica.call("jobs").get("jobs", [])}.get(job_id)


def finished(replica, job_id):
    j = job(replica, job_id)
    return j if j and j["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") else None


def read_job(replica, job_id):
    """Any job by id, a part too (GetJob through watch's first answer)."""
    out = replica.client("watch", f"--job={job_id}", "--json", "--timeout=2", check=False)
    return json.loads(out.stdout.splitlines()[0])


def running_on(replicas, replica_field):
    """The replica whose process runs a job, by the job's replica field (host:pid)."""
    return next(r for r in replicas if replica_field.endswith(r.name))


@pytest.fixture(scope="module")
def store_url(pg_cluster):
    return fresh_database(pg_cluster)


@pytest.fixture(scope="module")
def replicas(model_root, tmp_path_factory, store_url):
    tmp = tmp_path_factory.mktemp("replicas")
    token = tmp / "token"
    token.write_text("shared-token\n")
    started = [Replica(model_root, tmp, name, store_url, token).start() for name in "abc"]
    yield started
    for r in started:
        r.stop()


@pytest.fixture(scope="module")
def reference(replicas):
    """The long job's result as one replica computes it alone."""
    return replicas[0].call(*LONG)["result"]


def test_the_store_unit_tests_pass_on_a_real_postgresql(pg_cluster):
    out = subprocess.run([os.path.join(BIN, "postgres_job_store_test")], capture_output=True,
                         text=True, timeout=300,
                         env={**os.environ, "SUPERWEIGHT_TEST_PG_URL": pg_cluster["url"]})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "[  PASSED  ]" in out.stdout


def test_any_replica_answers_for_any_job(replicas):
    a, b, c = replicas
    job_id = a.call("score", "--model=tinystories656k", "--text=Once upon a time.",
                    "--no_wait")["job_id"]
    watched = c.client("watch", f"--job={job_id}").stdout.splitlines()
    assert "SUCCEEDED" in watched[-1]
    views = [job(r, job_id) for r in replicas]
    assert views[0] == views[1] == views[2]
    assert views[0]["state"] == "SUCCEEDED" and views[0]["score"]["logprobs"]
    assert views[0]["replica"], views[0]  # which replica ran it is recorded


def test_jobs_submitted_to_one_replica_run_on_the_others(replicas):
    a = replicas[0]
    ids = [a.call("score", "--model=tinystories656k", f"--text_file={TEXT}", "--window=128",
                  "--max_windows=24", "--no_wait")["job_id"] for _ in range(6)]
    done = [wait_for(lambda i=i: finished(a, i), 180) for i in ids]
    assert all(d["state"] == "SUCCEEDED" for d in done), done
    ran_on = {d["replica"] for d in done}
    assert len(ran_on) >= 2, ran_on  # one replica cannot have taken them all while busy
    for d in done:  # once per attempt (a busy machine may let a lease lapse: a second attempt)
        assert sum(r.runs_of(d["id"]) for r in replicas) == d["attempts"], d
    assert len({d["score"]["perplexity"] for d in done}) == 1


def test_a_cancel_on_another_replica_stops_the_running_job(replicas):
    a, b, c = replicas
    job_id = a.call(*LONG, "--no_wait")["job_id"]
    assert wait_for(lambda: (job(b, job_id) or {}).get("state") == "RUNNING", 30)
    t0 = time.time()
    cancelled = c.call("cancel", f"--job={job_id}")
    assert cancelled["state"] == "CANCELLED", cancelled
    assert time.time() - t0 < 3  # within a heartbeat or two
    assert job(a, job_id)["state"] == "CANCELLED"


def test_the_same_request_id_twice_gives_one_job(replicas):
    a, b, _ = replicas
    flags = ["score", "--model=tinystories656k", "--text=Idempotent.", "--request_id=ci-123"]
    first = a.call(*flags)
    again = b.call(*flags)
    assert first["job_id"] == again["job_id"]
    assert first["result"] == again["result"]
    assert [j["id"] for j in a.call("jobs")["jobs"] if j.get("request_id") == "ci-123"] == \
        [first["job_id"]]
    other = b.client("locate", "--model=tinystories656k", "--request_id=ci-123", check=False)
    assert other.returncode != 0 and "INVALID_ARGUMENT" in other.stderr
    assert first["job_id"] in other.stderr


def test_sigkill_of_the_running_replica_another_finishes_the_job(replicas, reference):
    job_id = replicas[0].call(*LONG, "--no_wait")["job_id"]
    running = wait_for(lambda: (job(replicas[1], job_id) or {}).get("replica")
                       if (job(replicas[1], job_id) or {}).get("state") == "RUNNING" else None)
    victim = running_on(replicas, running)
    time.sleep(1)
    victim.proc.kill()
    victim.proc.wait()
    survivor = next(r for r in replicas if r is not victim)
    done = wait_for(lambda: finished(survivor, job_id), 180)
    assert done["state"] == "SUCCEEDED", done
    assert done["attempts"] == 2 and done["replica"] != running
    assert done["score"] == reference  # number for number
    assert sum(r.runs_of(job_id) for r in replicas) == 2  # once per attempt
    # The replica that requeued it counted the lapsed lease.
    assert sum(metric(r, "superweight_store_leases_expired_total")
               for r in replicas if r is not victim) >= 1
    victim.start()  # for the tests after this one


def test_sigterm_hands_the_running_job_to_another_replica_without_counting_it(replicas,
                                                                               reference):
    job_id = replicas[0].call(*LONG, "--no_wait")["job_id"]
    running = wait_for(lambda: (job(replicas[1], job_id) or {}).get("replica")
                       if (job(replicas[1], job_id) or {}).get("state") == "RUNNING" else None)
    leaving = running_on(replicas, running)
    time.sleep(1)
    t0 = time.time()
    leaving.proc.terminate()
    assert leaving.proc.wait(timeout=30) == 0
    other = next(r for r in replicas if r is not leaving)
    # Handed back at once, not after the lease: another replica takes it within seconds.
    assert wait_for(lambda: (job(other, job_id) or {}).get("replica") not in (None, running), 10)
    assert time.time() - t0 < 10
    done = wait_for(lambda: finished(other, job_id), 180)
    assert done["state"] == "SUCCEEDED" and done["score"] == reference
    assert done["attempts"] == 1  # a rolling restart is no failed attempt
    assert sum(r.runs_of(job_id) for r in replicas) == 2
    leaving.start()


def test_a_replica_that_lost_its_lease_never_overwrites_the_result(replicas, reference):
    job_id = replicas[0].call(*LONG, "--no_wait")["job_id"]
    running = wait_for(lambda: (job(replicas[1], job_id) or {}).get("replica")
                       if (job(replicas[1], job_id) or {}).get("state") == "RUNNING" else None)
    frozen = running_on(replicas, running)
    frozen.proc.send_signal(signal.SIGSTOP)  # alive, but renewing nothing
    try:
        other = next(r for r in replicas if r is not frozen)
        taken = wait_for(lambda: (job(other, job_id) or {}).get("attempts") == 2, 30)
        assert taken, job(other, job_id)
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    done = wait_for(lambda: finished(other, job_id), 180)
    assert done["state"] == "SUCCEEDED" and done["replica"] != running
    assert done["score"] == reference
    # The frozen replica woke to find its claim gone, and wrote nothing.
    assert wait_for(lambda: "no longer holds" in frozen.log()
                    or "expired before it finished" in frozen.log(), 30), frozen.log()[-2000:]
    time.sleep(2)
    assert job(other, job_id) == done
    assert frozen.client("health", check=False).returncode == 0


def test_a_database_restart_mid_job_loses_and_duplicates_nothing(replicas, pg_cluster,
                                                                 reference):
    a, b, c = replicas
    job_id = a.call(*LONG, "--no_wait")["job_id"]
    queued = [b.call("score", "--model=tinystories656k", f"--text=Queued {i}.",
                     "--no_wait")["job_id"] for i in range(3)]
    assert wait_for(lambda: (job(b, job_id) or {}).get("state") == "RUNNING", 30)
    subprocess.run([PG_SCRATCH, "restart", pg_cluster["dir"]], check=True)
    done = wait_for(lambda: finished(c, job_id), 180)
    assert done["state"] == "SUCCEEDED" and done["score"] == reference
    for i in [job_id, *queued]:
        d = wait_for(lambda i=i: finished(c, i), 120)
        assert d["state"] == "SUCCEEDED", d
        assert sum(r.runs_of(i) for r in replicas) == d["attempts"]  # no run without an attempt
    for r in replicas:
        assert wait_for(lambda r=r: r.client("health", check=False).returncode == 0, 30)


def test_health_is_not_serving_while_the_database_is_away(replicas, pg_cluster):
    a = replicas[0]
    seen = a.call("score", "--model=tinystories656k", "--text=Read before.")["job_id"]
    before = read_job(a, seen)
    subprocess.run([PG_SCRATCH, "down", pg_cluster["dir"]], check=True)
    try:
        assert wait_for(lambda: a.client("health", check=False).returncode != 0, 20)
        out = a.client("jobs", check=False)
        assert out.returncode != 0 and "UNAVAILABLE" in out.stderr, out.stderr
        assert read_job(a, seen) == before  # what the replica read last, while the store is away
    finally:
        subprocess.run([PG_SCRATCH, "up", pg_cluster["dir"]], check=True)
    assert wait_for(lambda: a.client("health", check=False).returncode == 0, 30)
    assert a.call("score", "--model=tinystories656k", "--text=Back again.")["result"]


def test_racing_replicas_run_each_job_exactly_once(replicas):
    ids = [replicas[i % 3].call("score", "--model=tinystories656k", f"--text=Race {i}.",
                                "--no_wait")["job_id"] for i in range(30)]
    for i in ids:
        d = wait_for(lambda i=i: finished(replicas[0], i), 120)
        assert d["state"] == "SUCCEEDED", d
        assert sum(r.runs_of(i) for r in replicas) == d["attempts"], d


def test_a_replica_refuses_a_database_of_a_newer_schema(model_root, tmp_path, pg_cluster):
    url = fresh_database(pg_cluster)
    token = tmp_path / "token"
    token.write_text("t")
    Replica(model_root, tmp_path, "first", url, token).start().stop()  # migrates it
    psql(url, "INSERT INTO superweight_schema (version) VALUES (99)")
    r = Replica(model_root, tmp_path, "second", url, token)
    out = subprocess.run(r.args, env=r.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "version 99" in out.stderr, out.stderr


@pytest.mark.parametrize("url, named", [
    ("postgresql://sw:hunter2@127.0.0.1:1/db?connect_timeout=3", "127.0.0.1 port 1"),
    ("postgresql://sw:hunter2@127.0.0.1:port/db", "not a number"),
    ("mysql://sw:hunter2@127.0.0.1/db", "postgresql://"),
])
def test_a_bad_database_url_refuses_to_start_without_printing_the_password(model_root, tmp_path,
                                                                           url, named):
    token = tmp_path / "token"
    token.write_text("t")
    r = Replica(model_root, tmp_path, "bad", url, token)
    out = subprocess.run(r.args, env=r.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and named in out.stderr, out.stderr
    assert "hunter2" not in out.stderr


ABLATE = ["ablate", "--model=planted", "--super_weights=1,37,101", "--settings=prune,scale,outliers,restore_sa,token_probs",
          "--scales=0,0.5,2", "--tasks=wikitext2,piqa", "--max_examples=6", "--window=128",
          "--max_windows=2", "--token_prob_contexts=8"]


def part_runs(replicas, first_part, parts):
    """Per replica, how many of a fanned-out job's parts it ran (parts follow the job's id)."""
    n = int(first_part.split("-")[1])
    ids = [f"job-{i:06d}" for i in range(n, n + parts)]
    return [sum(r.runs_of(i) for i in ids) for r in replicas]


def test_an_ablate_fanned_out_gives_the_one_replica_table_number_for_number(replicas, server):
    alone = server.call(*ABLATE)["result"]  # the file store: one process runs it whole
    a = replicas[0]
    fanned = a.call(*ABLATE)
    whole = job(a, fanned["job_id"])
    # intact | prune, x0 | x0.5 | x2 | outliers | outliers+SW | restore: a part per evaluation.
    assert whole["parts"] == 7
    assert fanned["result"]["rows"] == alone["rows"]
    assert fanned["result"]["token_probabilities"] == alone["token_probabilities"]
    assert fanned["result"]["super_weights"] == alone["super_weights"]
    first_part = f"job-{int(fanned['job_id'].split('-')[1]) + 1:06d}"
    assert job(a, first_part) is None  # parts are not listed, but readable
    assert read_job(a, first_part)["part_of"] == fanned["job_id"]
    runs = part_runs(replicas, first_part, 7)
    assert sum(runs) == 7 and sum(1 for n in runs if n) >= 2, runs


def test_cancelling_a_fanned_out_job_cancels_its_parts(replicas):
    a, b, _ = replicas
    slow = [f if not f.startswith("--max_examples") else "--max_examples=1000" for f in ABLATE]
    job_id = a.call(*slow, "--no_wait")["job_id"]
    assert wait_for(lambda: (job(b, job_id) or {}).get("progress", 0) > 0, 60)
    t0 = time.time()
    assert b.call("cancel", f"--job={job_id}")["state"] == "CANCELLED"
    cancelled_ms = time.time() * 1000 + 1  # PostgreSQL's timestamps are rounded to the ms
    first_part = int(job_id.split("-")[1]) + 1
    parts = [f"job-{i:06d}" for i in range(first_part, first_part + 7)]

    def settled():
        states = [read_job(a, p) for p in parts]
        return states if all(s["state"] in ("SUCCEEDED", "CANCELLED") for s in states) else None

    states = wait_for(settled, 10)
    assert states, [read_job(a, p)["state"] for p in parts]
    assert time.time() - t0 < 5
    # A part that had finished before the cancel keeps its result; every other one ends
    # cancelled, a part that finished its work after the cancel too (the job is never assembled).
    for s in states:
        assert s["state"] == "CANCELLED" or int(s["finished_unix_ms"]) <= cancelled_ms, s
    assert sum(s["state"] == "CANCELLED" for s in states) >= 4, states


def test_a_request_id_names_one_job_on_either_store_across_a_restart(model_root, tmp_path,
                                                                     job_store_flags):
    start = restart_on_one_state_dir(model_root, tmp_path, extra=job_store_flags)
    flags = ["score", "--model=tinystories656k", "--text=Once.", "--request_id=build-7"]
    s = start()
    try:
        first = s.call(*flags)
        assert s.call(*flags) == first
        plain = s.call(*flags[:-1])  # no key: a job of its own
        assert plain["job_id"] != first["job_id"]
        for bad in ["has space", "x" * 129, "tab\there"]:
            out = s.client(*flags[:-1], f"--request_id={bad}", check=False)
            assert out.returncode != 0 and "INVALID_ARGUMENT" in out.stderr, out.stderr
        other = s.client("score", "--model=smollm2.gguf", "--text=Once.", "--request_id=build-7",
                         check=False)
        assert "INVALID_ARGUMENT" in other.stderr and first["job_id"] in other.stderr
    finally:
        s.stop()
    s = start()
    try:
        assert s.call(*flags) == first
    finally:
        s.stop()


def test_a_quantize_fanned_out_gives_the_one_replica_table_number_for_number(replicas, server):
    flags = ["quantize", "--model=planted", "--super_weights=1,37,101", "--tasks=wikitext2,piqa",
             "--max_examples=4", "--window=128", "--max_windows=1"]
    alone = server.call(*flags)["result"]
    fanned = replicas[1].call(*flags)
    assert job(replicas[1], fanned["job_id"])["parts"] == len(alone["rows"]) > 2
    assert fanned["result"] == alone


def test_a_replica_reading_another_model_file_refuses_the_job(model_root, tmp_path_factory,
                                                               pg_cluster):
    """Two replicas whose model roots disagree: a job submitted against one file and claimed by
    the replica that reads another fails, naming both, instead of computing on another model."""
    url = fresh_database(pg_cluster)
    tmp = tmp_path_factory.mktemp("disagreeing")
    other_root = tmp / "models"
    # The same name, another file: its first weights differ (as a fine-tune's would).
    shutil.copytree(model_root / "tinystories656k", other_root / "tinystories656k")
    weights = other_root / "tinystories656k" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    first = 8 + int.from_bytes(raw[:8], "little")  # past the header: the first tensor's data
    raw[first:first + 64] = bytes(64)
    weights.write_bytes(raw)
    shutil.copy(model_root / "smollm2.gguf", other_root / "smollm2.gguf")
    token = tmp / "token"
    token.write_text("t")
    a = Replica(model_root, tmp, "a", url, token).start()
    try:
        busy = a.call(*LONG, "--no_wait")["job_id"]  # a runs this; the next job is b's to claim
        assert wait_for(lambda: (job(a, busy) or {}).get("state") == "RUNNING", 30)
        b = Replica(other_root, tmp, "b", url, token).start()
        try:
            job_id = a.call("score", "--model=tinystories656k", "--text=Which model?",
                            "--no_wait")["job_id"]
            done = wait_for(lambda: finished(a, job_id), 60)
            assert done["state"] == "FAILED", done
            assert done["error_code"] == 9 and "model.safetensors" in done["error_message"], done
            assert done["replica"].endswith(b.name)
        finally:
            b.stop()
    finally:
        a.stop()


def store_gauges(replica):
    """The queue-wide gauges on a replica's /metrics: running, and queued scores."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{replica.metrics_port}/metrics").read().decode()
    running = re.search(r"^superweight_store_jobs_running (\S+)$", body, re.M)
    queued = re.search(r'^superweight_store_jobs_queued\{kind="score"\} (\S+)$', body, re.M)
    return (float(running.group(1)) if running else 0.0,
            float(queued.group(1)) if queued else 0.0)


def test_one_replica_reports_the_queue_wide_gauges(replicas):
    ids = [replicas[i % 3].call(*LONGER, "--no_wait")["job_id"] for i in range(6)]
    try:
        # Three running and three queued for a while: the reporting replica (the holder of an
        # advisory lock, every 10 s) sees them; the others report nothing of their own.
        def seen():
            gauges = [store_gauges(r) for r in replicas]
            reporting = [g for g in gauges if g != (0.0, 0.0)]
            return reporting if len(reporting) == 1 and reporting[0][0] >= 1 else None
        assert wait_for(seen, 25), [store_gauges(r) for r in replicas]
    finally:
        for i in ids:
            replicas[0].client("cancel", f"--job={i}", check=False)
