"""Bounded over time: finished jobs pruned by age and count (never queued or running ones),
/metrics answered while slow clients hold connections, and WatchJob streams capped so that 1,000
watchers on one job leave the server's threads and memory bounded."""
import os
import select
import socket
import struct
import subprocess
import threading
import time
import urllib.request

import pytest

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


def process_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return int(fields["Threads"][0]), int(fields["VmRSS"][0]) // 1024  # threads, MiB


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


@pytest.mark.parametrize("flag, why", [("--job_retention_age=-1h", "must not be negative"),
                                       ("--job_retention_count=-1", "must not be negative"),
                                       ("--max_watchers=0", "must be at least 1")])
def test_bounds_out_of_range_are_refused(model_root, flag, why):
    out = subprocess.run([os.path.join(BIN, "superweightd"), "--listen=127.0.0.1:0",
                          f"--model_root={model_root}", flag],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and why in out.stderr, out.stderr


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


# gRPC over cleartext HTTP/2, by hand (grpcio is not among the test dependencies): a frame is
# length (24 bits), type, flags, stream id; headers are HPACK literals without indexing.
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def hpack_literal(name, value):
    def string(s):
        assert len(s) < 127
        return bytes([len(s)]) + s.encode()
    return b"\x00" + string(name) + string(value)


class WatchConnection:
    """One HTTP/2 connection carrying many WatchJob streams; notes per stream whether a Job
    message arrived (watching) or the stream ended without one (refused)."""

    def __init__(self, port, job_id, streams):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buffer = b""
        self.watching, self.ended, self.reset = set(), set(), set()
        headers = b"".join(hpack_literal(n, v) for n, v in [
            (":method", "POST"), (":scheme", "http"),
            (":path", "/superweight.v1.SuperWeightService/WatchJob"),
            (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"),
            ("te", "trailers"), ("authorization", f"Bearer {TOKEN}")])
        request = b"\x0a" + bytes([len(job_id)]) + job_id.encode()  # WatchJobRequest.job_id
        message = b"\x00" + struct.pack(">I", len(request)) + request
        out = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
               frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 1 << 30)),  # initial window
               frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30))]
        self.streams = [2 * i + 1 for i in range(streams)]
        for sid in self.streams:
            out.append(frame(HEADERS, END_HEADERS, sid, headers))
            out.append(frame(DATA, END_STREAM, sid, message))
        self.sock.sendall(b"".join(out))

    def settled(self):
        return len(self.watching | self.ended | self.reset) == len(self.streams)

    def pump(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise AssertionError("the server closed a watch connection")
        self.buffer += data
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                break
            kind, flags = self.buffer[3], self.buffer[4]
            sid = struct.unpack(">I", self.buffer[5:9])[0] & 0x7FFFFFFF
            payload = self.buffer[9:9 + length]
            self.buffer = self.buffer[9 + length:]
            if kind == SETTINGS and not flags & ACK:
                self.sock.sendall(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                self.sock.sendall(frame(PING, ACK, 0, payload))
            elif kind == DATA and payload:
                self.watching.add(sid)
            elif kind == HEADERS and flags & END_STREAM and sid not in self.watching:
                self.ended.add(sid)
            elif kind == RST_STREAM:
                self.reset.add(sid)
            elif kind == GOAWAY:
                raise AssertionError(f"GOAWAY from the server: {payload!r}")

    def close(self):
        self.sock.close()


def test_a_thousand_watchers_on_one_job_are_capped_with_bounded_threads_and_memory(
        model_root, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    cap = 64
    queued = 16  # the server's threads are capped at callers of queued jobs + watchers + 64
    s = Server(model_root, tmp_path / "state", token,
               extra=[f"--max_watchers={cap}", f"--max_queued_jobs={queued}"]).start()
    connections = []
    try:
        long_job = s.client("score", "--model=smollm2.gguf", f"--text_file={LONG_TEXT}",
                            "--window=512", "--no_wait").stdout.strip()
        # Measured from the job running (its model open, its pass under way), not the idle server.
        assert wait_for(lambda: s.call("jobs")["jobs"][0]["state"] == "RUNNING")
        time.sleep(1)
        threads_before, rss_before = process_status(s.proc.pid)
        peak = [threads_before, rss_before]
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                threads, rss = process_status(s.proc.pid)
                peak[0], peak[1] = max(peak[0], threads), max(peak[1], rss)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            connections = [WatchConnection(s.port, long_job, 100) for _ in range(10)]
            t0 = time.time()
            while not all(c.settled() for c in connections) and time.time() - t0 < 60:
                ready, _, _ = select.select([c.sock for c in connections], [], [], 1)
                for c in connections:
                    if c.sock in ready:
                        c.pump()
        finally:
            sampling.set()
            sampler.join()
        watching = sum(len(c.watching) for c in connections)
        refused = sum(len(c.ended) for c in connections)
        reset = sum(len(c.reset) for c in connections)
        # Held is what stays: the quota's threads that served refused calls retire once idle,
        # which under load can take a moment after the last refusal (111 held at once, 89 a
        # second later, was seen).
        threads, rss = process_status(s.proc.pid)
        settle = time.time() + 10
        while threads > threads_before + cap + 16 and time.time() < settle:
            time.sleep(0.1)
            threads, rss = process_status(s.proc.pid)
        print(f"1000 watchers: {watching} watching, {refused} refused, {reset} reset; threads "
              f"{threads_before} before, {peak[0]} at peak, {threads} held; RSS {rss_before} MiB "
              f"before, {peak[1]} MiB at peak, {rss} MiB held")
        assert (watching, refused, reset) == (cap, 1000 - cap, 0)
        assert metric(s, "superweight_watchers") == cap
        # Refused by the cap, or, while a burst finds every thread busy, by gRPC's thread quota.
        assert 0 < metric(s, "superweight_watchers_refused_total") <= 1000 - cap
        # Over the cap, the real client is told why.
        out = s.client("watch", f"--job={long_job}", check=False, timeout=60)
        assert out.returncode != 0 and "RESOURCE_EXHAUSTED" in out.stderr, out.stderr
        # A thread per admitted watcher and a few of gRPC's and the server's; memory in tens of
        # MiB, not a thread's stack per attempt.
        assert threads <= threads_before + cap + 16
        # The quota's threads, and a few gRPC starts outside it under load (timer threads):
        # 170 against 169 was seen once with the machine busy.
        assert peak[0] <= threads_before + queued + 1 + cap + 64 + 8
        assert max(peak[1], rss) - rss_before < 256
        for c in connections:
            c.close()
        connections = []
        # Watchers that went away are noticed, and their places freed.
        assert wait_for(lambda: metric(s, "superweight_watchers") == 0)
        s.client("cancel", f"--job={long_job}")
    finally:
        for c in connections:
            c.close()
        s.stop()
