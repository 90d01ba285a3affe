"""End-to-end fixtures: the real superweightd on loopback, driven by the real client."""
import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from fast_gguf import GGUFReader  # noqa: E402  (tests/fast_gguf.py)

BIN = os.path.join(ROOT, "build", "bin")
TESTDATA = os.path.join(ROOT, "testdata")
SMOLLM2 = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
TOKEN = "s3cret-test-token"
# The one version (CMake's project VERSION), as every binary and package must report it.
VERSION = re.search(r"project\(superweight VERSION ([0-9.]+)",
                    open(os.path.join(ROOT, "CMakeLists.txt")).read()).group(1)
PLANTED = (1, 37, 101)  # layer, row, col of the weight the planted model makes huge


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "llama_cpp: needs llama.cpp's native build (tools/setup-bench.sh): make "
        "llama-cpp-test runs these, make e2e-test the others")


@contextlib.contextmanager
def python_package_build(tmp_path_factory):
    """pip builds python/ in place (its build/ and egg-info): one build at a time, across
    pytest-xdist's workers too (their temporary directories share a parent)."""
    with open(tmp_path_factory.getbasetemp().parent / "python-package-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def coordinate(super_weight):
    c = super_weight["coordinate"]  # proto JSON writes 64-bit integers as strings
    return int(c.get("layer", 0)), int(c.get("row", 0)), int(c.get("col", 0))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plant_super_weight(src, dst):
    """A copy of TinyStories-656K whose layers[1].down_proj[row, col] is made large enough to
    create a spike in that layer's output."""
    shutil.copytree(src, dst)
    path = os.path.join(dst, "model.safetensors")
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    layer, row, col = PLANTED
    t = header[f"model.layers.{layer}.mlp.down_proj.weight"]
    cols = t["shape"][1]
    at = 8 + header_len + t["data_offsets"][0] + 4 * (row * cols + col)
    raw[at:at + 4] = np.float32(4000.0).tobytes()
    with open(path, "wb") as f:
        f.write(raw)


def zero_super_weight_q8_0(src, dst, layer=11, row=507, col=1229):
    """A copy of a Q8_0 GGUF with one weight's int8 code set to 0, so the weight is exactly 0."""
    shutil.copy(src, dst)
    reader = GGUFReader(str(src))
    tensor = next(t for t in reader.tensors if t.name == f"blk.{layer}.ffn_down.weight")
    assert tensor.tensor_type.name == "Q8_0"
    cols = int(tensor.shape[0])
    at = tensor.data_offset + row * (cols // 32) * 34 + (col // 32) * 34 + 2 + col % 32
    with open(dst, "r+b") as f:
        f.seek(at)
        assert f.read(1) != b"\x00"
        f.seek(at)
        f.write(b"\x00")


class Server:
    def __init__(self, root, state_dir, token_file, extra=(), client_flags=(), env=None):
        self.port, self.metrics_port = free_port(), free_port()
        self.args = [os.path.join(BIN, "superweightd"), f"--listen=127.0.0.1:{self.port}",
                     f"--model_root={root}", f"--metrics_listen=127.0.0.1:{self.metrics_port}",
                     f"--state_dir={state_dir}", f"--token_file={token_file}",
                     "--max_tokens=2048", *extra]
        self.token_file = token_file
        self.client_flags = list(client_flags)  # e.g. --ca_cert for a TLS server
        self.env = {**os.environ, **(env or {})}  # e.g. SUPERWEIGHT_MAX_ISA
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=self.env)
        for _ in range(100):
            if self.client("models", check=False).returncode == 0:
                return self
            assert self.proc.poll() is None, self.proc.stdout.read().decode()
            time.sleep(0.1)
        raise AssertionError("server did not come up")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def client(self, verb, *flags, token=True, check=True, timeout=600):
        cmd = [os.path.join(BIN, "superweight"), f"--server=127.0.0.1:{self.port}",
               *self.client_flags, verb, *flags]
        if token:
            cmd.append(f"--token_file={self.token_file}")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> {out.returncode}: {out.stderr}")
        return out

    def call(self, verb, *flags, **kw):
        return json.loads(self.client(verb, "--json", *flags, **kw).stdout)


def jobs_by_id(server):
    return {j["id"]: j for j in server.call("jobs").get("jobs", [])}


def restart_on_one_state_dir(model_root, tmp_path, extra=()):
    """Starts servers one after another on the same model root, state directory, token and
    `extra` flags: a restart."""
    token = tmp_path / "token"
    token.write_text("t")
    return lambda: Server(model_root, tmp_path / "state", token, extra=extra).start()


def metric(server, name):
    """A metric's value from the server's /metrics."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode()
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not on /metrics")


def kill_mid_score_job(start):
    """A server from `start` takes a long Score job and is killed (SIGKILL, no chance to clean
    up) while the job runs; the job's id."""
    text_file = os.path.join(TESTDATA, "text", "wiki.test.raw")
    first = start()
    job_id = first.client("score", "--model=smollm2.gguf", f"--text_file={text_file}",
                          "--window=512", "--no_wait").stdout.strip()
    time.sleep(1.0)
    first.proc.kill()
    first.proc.wait()
    return job_id


def check_cancel_mid_job_kept_across_a_restart(model_root, tmp_path, verb, short_flags,
                                               long_flags, store_flags=()):
    """A finished job of `verb` and a long one cancelled while it runs: the cancel lands within
    2 s, and after a restart (on the same state directory, or job store) the first keeps its
    result and the second its state."""
    start = restart_on_one_state_dir(model_root, tmp_path, extra=store_flags)
    first = start()
    try:
        done = first.call(verb, *short_flags)
        long_job = first.client(verb, *long_flags, "--no_wait").stdout.strip()
        time.sleep(3)  # running: past its first steps
        first.client("cancel", f"--job={long_job}")
        t0 = time.time()
        while time.time() - t0 < 5:
            job = jobs_by_id(first)[long_job]
            if job["state"] == "CANCELLED":
                break
            time.sleep(0.1)
        assert job["state"] == "CANCELLED"
        assert time.time() - t0 < 2
    finally:
        first.stop()
    second = start()
    try:
        jobs = jobs_by_id(second)
        assert jobs[done["job_id"]]["state"] == "SUCCEEDED"
        assert jobs[done["job_id"]][verb]["rows"] == done["result"]["rows"]
        assert jobs[long_job]["state"] == "CANCELLED"
    finally:
        second.stop()


@pytest.fixture(scope="session")
def model_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    shutil.copy(SMOLLM2, root / "smollm2.gguf")
    shutil.copytree(os.path.join(TESTDATA, "hf_tinystories_656k"), root / "tinystories656k")
    shutil.copytree(os.path.join(TESTDATA, "stories260K"), root / "stories260K")
    plant_super_weight(os.path.join(TESTDATA, "hf_tinystories_656k"), root / "planted")
    (root / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(os.path.join(TESTDATA, "stories260K", "stories260K.bin"), outside / "secret.bin")
    os.symlink(outside / "secret.bin", root / "link.bin")
    return root


@pytest.fixture(scope="session")
def server(model_root, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    token_file = state / "token"
    token_file.write_text(TOKEN + "\n")
    s = Server(model_root, state / "jobs", token_file).start()
    yield s
    s.stop()


PG_SCRATCH = os.path.join(ROOT, "tools", "pg-scratch.sh")


@pytest.fixture(scope="session")
def pg_cluster():
    """A throw-away PostgreSQL 15 cluster on loopback (tools/pg-scratch.sh), removed at the end:
    its admin URL and directory."""
    import tempfile
    scratch = tempfile.mkdtemp(prefix="superweight-pg-")
    os.chmod(scratch, 0o755)  # the cluster's owner (postgres, when run as root) reads it
    cluster = os.path.join(scratch, "cluster")
    url = subprocess.run([PG_SCRATCH, "start", cluster, str(free_port())], check=True,
                         capture_output=True, text=True).stdout.strip()
    yield {"url": url, "dir": cluster}
    subprocess.run([PG_SCRATCH, "stop", cluster], check=False)
    shutil.rmtree(scratch, ignore_errors=True)


_databases = iter(range(1, 1 << 30))


@pytest.fixture(params=["files", "postgresql"])
def job_store_flags(request):
    """The server flags of each job store, for the tests every store must pass alike: none (the
    file store in --state_dir), or --job_store naming a fresh PostgreSQL database."""
    if request.param == "files":
        return ()
    return (f"--job_store={fresh_database(request.getfixturevalue('pg_cluster'))}",)


def fresh_database(pg_cluster):
    """The URL of a new, empty database on the cluster."""
    name = f"sw_e2e_{os.getpid()}_{next(_databases)}"
    subprocess.run(["psql", "-qAt", pg_cluster["url"], "-c", f"CREATE DATABASE {name}"],
                   check=True, capture_output=True)
    return pg_cluster["url"].rsplit("/", 1)[0] + "/" + name


def psql(url, sql):
    return subprocess.run(["psql", "-qAt", url, "-c", sql], check=True, capture_output=True,
                          text=True).stdout.strip()


class Replica(Server):
    """A superweightd sharing the PostgreSQL job store at `url` (given by the environment, as a
    deployment keeps the password off the command line), its log in a file."""

    def __init__(self, root, tmp, name, url, token_file, extra=()):
        super().__init__(root, tmp / f"state-{name}", token_file,
                         extra=["--job_lease_seconds=4", *extra],
                         env={"SUPERWEIGHT_JOB_STORE": url})
        self.log_path = tmp / f"{name}.log"

    def start(self):
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     env=self.env)
        for _ in range(150):
            if self.client("models", check=False).returncode == 0:
                return self
            assert self.proc.poll() is None, self.log()
            time.sleep(0.1)
        raise AssertionError("replica did not come up: " + self.log())

    def log(self):
        return self.log_path.read_text(errors="replace")

    def runs_of(self, job_id):
        """Times this replica started running the job (one per attempt it held)."""
        return len(re.findall(rf"job {job_id} \(\w+\) running here, attempt", self.log()))

    @property
    def name(self):
        return f":{self.proc.pid}"
