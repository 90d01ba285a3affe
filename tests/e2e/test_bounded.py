"""Bounded over time: finished jobs pruned by age and count (never queued or running ones), and
/metrics answered while slow clients hold connections."""
import os
import socket
import subprocess
import time
import urllib.request

from conftest import BIN, TESTDATA, TOKEN, Server

LONG_TEXT = os.path.join(TESTDATA, "text", "wiki.test.raw")


def scrape(server, timeout=10):
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    return urllib.request.urlopen(url, timeout=timeout).read().decode()


def metric(server, name):
    for line in scrape(server).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not on /metrics")


def job_record(job_id, finished_unix_ms, state=3):
    """A finished Job message by hand: id (1), kind (2), state (4), created (8), finished (9)."""
    def field(number, data):
        return bytes([number << 3 | 2, len(data)]) + data

    def varint(number, value):
        out = bytearray([number << 3])
        while True:
            out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
            value >>= 7
            if not value:
                return bytes(out)

    return (field(1, job_id.encode()) + field(2, b"score") + varint(4, state) +
            varint(8, finished_unix_ms - 1000) + varint(9, finished_unix_ms))


def wait_for(predicate, seconds=30):
    t0 = time.time()
    while time.time() - t0 < seconds:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_finished_jobs_are_pruned_oldest_first_by_age_and_count(model_root, tmp_path):
    jobs = tmp_path / "state" / "jobs"
    jobs.mkdir(parents=True)
    now = int(time.time() * 1000)
    stored = {"job-000001": now - 2 * 3600_000,  # older than --job_retention_age
              "job-000002": now - 3 * 60_000, "job-000003": now - 2 * 60_000,
              "job-000004": now - 60_000}
    for job_id, finished in stored.items():
        (jobs / f"{job_id}.pb").write_bytes(job_record(job_id, finished))
    token = tmp_path / "token"
    token.write_text(TOKEN)
    s = Server(model_root, tmp_path / "state", token,
               extra=["--job_retention_age=1h", "--job_retention_count=2"]).start()
    try:
        # At start-up: job-000001 by age, then job-000002 as the oldest beyond the count.
        assert {j["id"] for j in s.call("jobs")["jobs"]} == {"job-000003", "job-000004"}
        assert sorted(os.listdir(jobs)) == ["job-000003.pb", "job-000004.pb"]
        assert metric(s, "superweight_jobs_pruned_total") == 2
        assert metric(s, "superweight_jobs_stored") == 2
        # A long job running and two queued behind it: more jobs than the count, none pruned.
        long_job = s.client("score", "--model=smollm2.gguf", f"--text_file={LONG_TEXT}",
                            "--window=512", "--no_wait").stdout.strip()
        queued = [s.client("score", "--model=tinystories656k", f"--text=Queued {i}.",
                           "--no_wait").stdout.strip() for i in range(2)]
        listed = {j["id"] for j in s.call("jobs")["jobs"]}
        assert {long_job, *queued} <= listed
        s.client("cancel", f"--job={long_job}")
        for job_id in queued:
            assert "SUCCEEDED" in s.client("watch", f"--job={job_id}").stdout.splitlines()[-1]
        # Every finish pruned the oldest finished jobs: the two newest are what remains.
        assert wait_for(lambda: {j["id"] for j in s.call("jobs")["jobs"]} == set(queued))
        assert sorted(os.listdir(jobs)) == sorted(f"{j}.pb" for j in queued)
        assert metric(s, "superweight_jobs_pruned_total") == 5
        assert metric(s, "superweight_jobs_stored") == 2
    finally:
        s.stop()
    # Pruned records stay pruned across a restart; with every record pruned, ids still go on
    # past the pruned ones.
    s = Server(model_root, tmp_path / "state", token,
               extra=["--job_retention_age=1h", "--job_retention_count=2"]).start()
    try:
        assert {j["id"] for j in s.call("jobs")["jobs"]} == set(queued)
    finally:
        s.stop()
    s = Server(model_root, tmp_path / "state", token, extra=["--job_retention_age=1ms"]).start()
    try:
        assert s.call("jobs").get("jobs", []) == []
    finally:
        s.stop()
    s = Server(model_root, tmp_path / "state", token).start()
    try:
        job_id = s.call("score", "--model=tinystories656k", "--text=After pruning.")["job_id"]
        assert job_id > max(queued), (job_id, queued)
    finally:
        s.stop()


def test_negative_retention_is_refused(model_root, tmp_path):
    for flag in ["--job_retention_age=-1h", "--job_retention_count=-1"]:
        out = subprocess.run([os.path.join(BIN, "superweightd"), "--listen=127.0.0.1:0",
                              f"--model_root={model_root}", flag],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "must not be negative" in out.stderr, out.stderr


def test_a_scrape_is_answered_while_slow_clients_hold_connections(server):
    slow = []
    try:
        for _ in range(4):  # more than civetweb's 2 default threads, each waiting 30 s
            c = socket.create_connection(("127.0.0.1", server.metrics_port))
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: slow\r\n")  # never finished
            slow.append(c)
        time.sleep(0.5)  # let the server take them
        t0 = time.time()
        body = scrape(server, timeout=5)
        assert "superweight_requests_total" in body
        print(f"scrape with {len(slow)} slow clients connected: {time.time() - t0:.3f} s")
        # The request timeout ends a client that never finishes its headers.
        for c in slow:
            c.settimeout(20)
            try:
                while c.recv(4096):
                    pass
            except ConnectionResetError:
                pass
        print(f"slow clients dropped after {time.time() - t0:.1f} s")
        assert time.time() - t0 < 20
    finally:
        for c in slow:
            c.close()
