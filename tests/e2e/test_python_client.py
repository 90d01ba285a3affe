"""What users install and copy: the Python package (python/) in a fresh virtual environment
against the real server, the CI gate of examples/ci/ in its shell and pytest forms, and one
version everywhere (CMake's)."""
import os
import re
import shutil
import subprocess
import urllib.request

import pytest
import yaml
from fast_gguf import GGUFReader

from conftest import BIN, ROOT, TOKEN, VERSION, Server, python_package_build

GATE = os.path.join(ROOT, "examples", "ci")
QUICK_CHECK = {"WINDOW": "128", "MAX_WINDOWS": "1", "SUPER_WEIGHTS": "11,507,1229",
               "MAX_PPL_RATIO": "1.3"}

FIVE_LINES = """\
import sys
from superweight import Client
sw = Client(sys.argv[1], token=sys.argv[2])
result = sw.check(sys.argv[3], "smollm2.gguf", max_windows=1, max_perplexity_ratio=1.3, super_weights=[(11, 507, 1229)])
print("passed" if result.passed else "failed: " + "; ".join(result.failures))
"""


@pytest.fixture(scope="session")
def package_python(tmp_path_factory):
    """A fresh virtual environment with `pip install ./python` done (pytest from the system)."""
    env = tmp_path_factory.mktemp("python-client") / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(env)],
                   check=True)
    python = str(env / "bin" / "python")
    with python_package_build(tmp_path_factory):
        out = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              os.path.join(ROOT, "python")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return python


@pytest.fixture(scope="session")
def good_and_lost(model_root, tmp_path_factory):
    """The demo's export (INT4 in blocks of 128 with the super weight restored, a Q4_0 GGUF whose
    super weight's down_proj stays F16), made by the server's Quantize as make demo makes it, and
    a copy of it with the super weight zeroed."""
    state = tmp_path_factory.mktemp("gate_state")
    (state / "token").write_text(TOKEN)
    exporter = Server(model_root, state / "jobs", state / "token",
                      extra=[f"--export_root={model_root}/gate-exports"]).start()
    try:
        exporter.client("quantize", "--model=smollm2.gguf", "--super_weights=11,507,1229",
                        "--bits=4", "--block_size=128", "--restore", "--tasks=wikitext2",
                        "--window=128", "--max_windows=1", "--export=gguf:Q4_0",
                        "--export_name=smollm2-q4_0-sw.gguf")
    finally:
        exporter.stop()
    good = model_root / "gate-exports" / "smollm2-q4_0-sw.gguf"
    lost = model_root / "gate-exports" / "smollm2-q4_0-sw-lost.gguf"
    shutil.copy(good, lost)
    tensor = next(t for t in GGUFReader(str(lost)).tensors if t.name == "blk.11.ffn_down.weight")
    assert tensor.tensor_type.name == "F16"
    with open(lost, "r+b") as f:
        f.seek(tensor.data_offset + (507 * int(tensor.shape[0]) + 1229) * 2)
        f.write(b"\x00\x00")
    return "gate-exports/" + good.name, "gate-exports/" + lost.name


def test_five_line_script_after_pip_install(package_python, server, good_and_lost):
    script = FIVE_LINES
    assert len(script.strip().splitlines()) == 5
    good, lost = good_and_lost
    address = f"127.0.0.1:{server.port}"
    for model, want in ((good, "passed"), (lost, "failed: ")):
        out = subprocess.run([package_python, "-c", script, address, TOKEN, model],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(want), out.stdout
    assert "is 0" in out.stdout  # the lost weight named


def gate_env(server, model):
    return {**os.environ, **QUICK_CHECK, "SUPERWEIGHT_SERVER": f"127.0.0.1:{server.port}",
            "SUPERWEIGHT_TOKEN_FILE": str(server.token_file), "MODEL": model,
            "REFERENCE": "smollm2.gguf", "SUPERWEIGHT_CLIENT": os.path.join(BIN, "superweight")}


def test_gate_shell_form_exits_3_when_the_super_weight_is_lost(server, good_and_lost):
    good, lost = good_and_lost
    ok = subprocess.run([os.path.join(GATE, "gate.sh")], env=gate_env(server, good),
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run([os.path.join(GATE, "gate.sh")], env=gate_env(server, lost),
                         capture_output=True, text=True)
    assert bad.returncode == 3, bad.stdout + bad.stderr
    assert "LOST" in bad.stdout


def test_gate_pytest_form_fails_when_the_super_weight_is_lost(package_python, server,
                                                              good_and_lost):
    good, lost = good_and_lost
    run = [package_python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           os.path.join(GATE, "test_gate.py")]
    ok = subprocess.run(run, env=gate_env(server, good), capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run(run, env=gate_env(server, lost), capture_output=True, text=True)
    assert bad.returncode == 1 and "is 0" in bad.stdout, bad.stdout + bad.stderr


def test_ci_files_are_valid_and_run_exactly_the_gate():
    github = yaml.safe_load(open(os.path.join(GATE, "github-actions.yml")))
    job = github["jobs"]["gate"]
    runs = [step.get("run", "") for step in job["steps"]]
    assert "examples/ci/gate.sh" in runs and "pytest examples/ci/test_gate.py" in runs
    service = next(iter(job["services"].values()))
    assert service["image"] == f"superweight:{VERSION}"
    assert any(v.endswith(":/models:ro") for v in service["volumes"])
    gitlab = yaml.safe_load(open(os.path.join(GATE, "gitlab-ci.yml")))["super-weight-gate"]
    assert gitlab["services"][0]["name"] == f"superweight:{VERSION}"
    assert "examples/ci/gate.sh" in gitlab["script"]
    assert "pytest examples/ci/test_gate.py" in gitlab["script"]
    for env in (job["env"], gitlab["variables"]):
        assert {"MODEL", "REFERENCE", "SUPERWEIGHT_SERVER"} <= set(env)


def test_package_against_a_server_it_starts(package_python, model_root):
    """python/tests: every verb, async jobs, cancellation, refusals and their codes, token and
    TLS, through superweight.testing's server."""
    out = subprocess.run([package_python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          os.path.join(ROOT, "python", "tests")],
                         env={**os.environ, "SUPERWEIGHTD": os.path.join(BIN, "superweightd"),
                              "SUPERWEIGHT_MODEL_ROOT": str(model_root),
                              "SUPERWEIGHT_EXPECTED_VERSION": VERSION},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(r"\b10 passed\b", out.stdout), out.stdout[-2000:]


def git_revision():
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True)
    return head.stdout.strip() if head.returncode == 0 else "unknown"


def test_one_version_everywhere(server, package_python):
    revision = git_revision()
    for binary in ("superweight", "superweightd", "superweight-engine"):
        line = subprocess.run([os.path.join(BIN, binary), "--version"], capture_output=True,
                              text=True, check=True).stdout
        assert line.startswith(f"{binary} {VERSION} (git {revision}"), line
    info = server.call("info")
    assert info["version"] == VERSION and info["git_revision"].startswith(revision)
    assert info["job_store"] == "files" and info["cpu_class"]
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode()
    assert (f'superweight_build_info{{cpu_class="{info["cpu_class"]}",'
            f'revision="{info["git_revision"]}",version="{VERSION}"}} 1') in body
    package = subprocess.run([package_python, "-c", "import superweight; print(superweight.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert package == VERSION
    assert os.path.exists(os.path.join(ROOT, "LICENSE"))
