"""Model files that claim what they do not hold: refused with the field named, never a crash,
an UNKNOWN for everyone, or memory allocated from the claim."""
import json
import os
import shutil
import subprocess
import time

import psutil
import pytest

from conftest import BIN, SMOLLM2, TESTDATA, Server


def broken_copy(root, name, **config):
    shutil.copytree(os.path.join(TESTDATA, "hf_tinystories_656k"), root / name)
    path = root / name / "config.json"
    c = json.loads(path.read_text())
    c.update(config)
    path.write_text(json.dumps(c))


@pytest.fixture
def hostile_root(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(os.path.join(TESTDATA, "hf_tinystories_656k"), root / "good")
    broken_copy(root, "negative_layers", num_hidden_layers=-2)
    broken_copy(root, "million_layers", num_hidden_layers=2000000)
    broken_copy(root, "negative_eps", rms_norm_eps=-1)
    broken_copy(root, "zero_theta", rope_theta=0)
    return root


def test_broken_configs_are_refused_by_name_and_the_rest_is_served(hostile_root, tmp_path):
    token = tmp_path / "token"
    token.write_text("t")
    s = Server(hostile_root, tmp_path / "state", token).start()
    try:
        rss_before = psutil.Process(s.proc.pid).memory_info().rss
        names = [m["name"] for m in s.call("models")["models"]]
        assert "good" in names
        for model, field in [("negative_layers", "layer count -2"),
                             ("million_layers", "layer count 2000000"),
                             ("negative_eps", "norm epsilon -1"),
                             ("zero_theta", "rope theta 0")]:
            out = s.client("score", f"--model={model}", "--text=Once upon a time.", check=False)
            assert out.returncode == 1
            assert "INVALID_ARGUMENT" in out.stderr and field in out.stderr, out.stderr
        # Listing and opening them allocated nothing from their claims (a million layers
        # once cost ~740 MB per attempt).
        assert psutil.Process(s.proc.pid).memory_info().rss - rss_before < 100 << 20
        assert s.call("score", "--model=good", "--text=Once upon a time.")["result"]["logprobs"]
    finally:
        s.stop()


@pytest.mark.parametrize("flag", ["--threshold=nan", "--threshold=inf", "--threshold=-1"])
def test_non_finite_request_numbers_are_refused(server, flag):
    out = server.client("locate", "--model=tinystories656k", "--text=Once upon a time", flag,
                        check=False)
    assert out.returncode == 1, out.stdout
    assert "INVALID_ARGUMENT" in out.stderr and "finite" in out.stderr, out.stderr


@pytest.fixture
def victim(tmp_path):
    """A server of its own over a copy of SmolLM2 that a test may damage: (server, the file)."""
    root = tmp_path / "models"
    root.mkdir()
    path = root / "victim.gguf"
    shutil.copy(SMOLLM2, path)
    token = tmp_path / "token"
    token.write_text("t")
    server = Server(root, tmp_path / "state", token).start()
    yield server, path
    server.stop()


def test_a_model_file_truncated_in_place_is_refused_not_a_crash(victim):
    """Issue: `truncate -s 1M` on a GGUF the server had open took it down with SIGBUS. The
    registry now sees the file changed and opens it again (which fails cleanly); a good copy put
    back is served again."""
    server, victim = victim
    first = server.call("score", "--model=victim.gguf", "--text=The cat sat on the mat.")
    with open(victim, "r+b") as f:
        f.truncate(1 << 20)
    out = server.client("score", "--model=victim.gguf", "--text=The cat sat on the mat.",
                        check=False)
    assert out.returncode == 1 and "INVALID_ARGUMENT" in out.stderr, out.stderr
    assert server.proc.poll() is None
    shutil.copy(SMOLLM2, victim)
    again = server.call("score", "--model=victim.gguf", "--text=The cat sat on the mat.")
    assert again["result"]["perplexity"] == pytest.approx(first["result"]["perplexity"], rel=1e-5)


def test_a_model_file_shortened_during_a_job_fails_that_job_not_the_server(victim):
    """Issue: a file shortened *while* a job read it still raised SIGBUS (exit 135, no log
    line). The fault now reads zeros, stops the job at its next step and fails it as ABORTED,
    naming the file; the server goes on and refuses the short file from then on."""
    server, victim = victim
    job_id = server.client("quantize", "--model=victim.gguf", "--super_weights=11,507,1229",
                           "--tasks=wikitext2", "--window=128", "--max_windows=2",
                           "--no_wait").stdout.strip()
    deadline = time.time() + 120
    while time.time() < deadline:
        job = {j["id"]: j for j in server.call("jobs")["jobs"]}[job_id]
        if job["state"] == "RUNNING" and job.get("progress", 0) > 0:
            break  # reading the weights, window after window, setting after setting
        time.sleep(0.2)
    assert job["state"] == "RUNNING", job
    with open(victim, "r+b") as f:
        f.truncate(1 << 20)
    t0 = time.time()
    while time.time() - t0 < 120:
        job = {j["id"]: j for j in server.call("jobs")["jobs"]}[job_id]
        if job["state"] not in ("QUEUED", "RUNNING"):
            break
        time.sleep(0.2)
    assert server.proc.poll() is None, server.proc.stdout.read().decode()[-2000:]
    assert job["state"] == "FAILED", job
    assert job["error_code"] == 10  # ABORTED
    assert "victim.gguf was shortened in place" in job["error_message"], job
    assert "rename" in job["error_message"]
    assert "quantize" not in job  # no result from void work
    out = server.client("score", "--model=victim.gguf", "--text=The cat sat on the mat.",
                        check=False)
    assert out.returncode == 1 and "INVALID_ARGUMENT" in out.stderr, out.stderr
    assert server.proc.poll() is None


@pytest.mark.parametrize("verb", ["watch", "cancel"])
def test_malformed_job_ids_are_invalid_argument_with_a_message(server, verb):
    for bad in ["job-" + "9" * 10000, "job-\udcff", "../job-1", "job-12x"]:
        arg = f"--job={bad}".encode("utf-8", "surrogateescape")
        out = subprocess.run([os.path.join(BIN, "superweight"), f"--server=127.0.0.1:{server.port}",
                              f"--token_file={server.token_file}", verb, arg],
                             capture_output=True, timeout=30)
        stderr = out.stderr.decode("utf-8", "replace")
        assert out.returncode == 1, stderr
        assert "INVALID_ARGUMENT" in stderr and "job ids look like job-000001" in stderr, stderr
        assert len(stderr) < 2000
    assert server.client("models").returncode == 0


def test_errors_echoing_huge_names_are_capped(server):
    out = server.client("score", "--model=" + "m" * 10000 + ".gguf", "--text=hi there",
                        check=False)
    assert out.returncode == 1, out.stderr
    assert "RESOURCE_EXHAUSTED" not in out.stderr
    assert ("NOT_FOUND" in out.stderr or "INVALID_ARGUMENT" in out.stderr), out.stderr[:300]
    assert "bytes)" in out.stderr and len(out.stderr) < 2000
