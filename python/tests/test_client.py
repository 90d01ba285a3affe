"""The package against a real superweightd (started by superweight.testing): every verb, async
jobs and cancellation, a refused request's exception and code, the token, and TLS.

Run by tests/e2e/test_python_client.py in a fresh virtual environment with the package
installed; needs $SUPERWEIGHTD and $SUPERWEIGHT_MODEL_ROOT (a root holding stories260K/ and
smollm2.gguf)."""
import copy
import os
import pickle
import subprocess
import time

import grpc
import pytest

import superweight
from superweight import Client, SuperweightError
from superweight.testing import local_server

SMALL = "stories260K/stories260K.bin"  # llama2c, 260K parameters: every job in a second
SMOLLM2 = "smollm2.gguf"


@pytest.fixture(scope="module")
def sw(superweight_server):
    with superweight_server.client() as client:
        yield client


def test_version_and_server_info(sw):
    info = sw.info()
    assert info.version == superweight.__version__ == os.environ["SUPERWEIGHT_EXPECTED_VERSION"]
    assert info.cpu_class in ("avx2", "avx512", "avx512_bf16", "amx")
    assert info.job_store == "files" and info.to_dict()["version"] == info.version


def test_health_and_models(sw):
    assert sw.health()
    names = {m.name for m in sw.models()}
    assert {SMALL, SMOLLM2} <= names


def test_locate_score_ablate_quantize_check(sw):
    located = sw.locate(SMOLLM2, skip_confirmation=True)
    coords = [(s.coordinate.layer, s.coordinate.row, s.coordinate.col)
              for s in located.super_weights]
    assert (11, 507, 1229) in coords and located.job_id.startswith("job-")
    intact = sw.score(SMALL, text="Once upon a time there was a little dog.")
    zeroed = sw.score(SMALL, text="Once upon a time there was a little dog.", zero=[(0, 1, 2)])
    assert intact.perplexity > 1 and len(intact.logprobs) == intact.tokens_scored
    assert zeroed.perplexity != intact.perplexity
    table = sw.ablate(SMALL, super_weights=[(0, 1, 2)], settings=["prune"], tasks=["wikitext2"],
                      max_windows=1, window=64)
    assert [r.setting for r in table.rows] == ["intact", "prune SW"]
    assert table.to_dict()["rows"][0]["metrics"]["wikitext2/perplexity"] > 1
    rows = sw.quantize(SMALL, super_weights=[(0, 1, 2)], tasks=["wikitext2"], max_windows=1,
                       window=64, settings=[{"full_precision": True}, {"bits": 4, "block_size": 32}])
    assert len(rows.rows) == 2 and rows.rows[1].metrics["wikitext2/perplexity"] > 1
    check = sw.check(SMALL, reference=SMALL, super_weights=[(0, 1, 2)], window=64, max_windows=1)
    assert check.passed and check.perplexity_ratio == pytest.approx(1.0)
    recipe = sw.recipe(SMOLLM2, "Q4_K_M", super_weights=[(11, 507, 1229)], window=64,
                       max_windows=1)
    assert recipe.command.startswith("llama-quantize ") and recipe.command.endswith(" Q4_K_M")
    assert recipe.tensors[0].mix_type == "Q6_K" and recipe.recipe.super_weights_kept


def test_async_job_waits_watches_and_lists(sw):
    job = sw.score(SMALL, text="One day a cat sat.", wait=False)
    assert isinstance(job, superweight.Job) and job.id.startswith("job-")
    states = [j.state for j in job.watch()]
    assert states[-1] == "SUCCEEDED" and job.done
    assert job.wait().perplexity > 1
    assert job.id in {j.id for j in sw.jobs(model=SMALL)}


def test_cancelled_job_raises_cancelled(sw):
    job = sw.ablate(SMOLLM2, super_weights=[(11, 507, 1229)], tasks=["wikitext2"],
                    max_windows=64, wait=False)
    deadline = time.monotonic() + 60
    while job.refresh().state == "QUEUED" and time.monotonic() < deadline:
        time.sleep(0.05)
    job.cancel()
    with pytest.raises(SuperweightError) as e:
        job.wait(timeout=120)
    assert e.value.code == grpc.StatusCode.CANCELLED and e.value.job_id == job.id
    assert sw.job(job.id).state == "CANCELLED"


def test_refusals_raise_with_their_code(sw, superweight_server):
    with pytest.raises(SuperweightError) as e:
        sw.score("no-such-model.gguf", text="x")
    assert e.value.code == grpc.StatusCode.NOT_FOUND and "no-such-model" in e.value.message
    with pytest.raises(SuperweightError) as e:
        sw.locate(SMALL, threshold=-1)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(TypeError, match="no_such_field"):
        sw.locate(SMALL, no_such_field=1)
    with Client(superweight_server.address, token="wrong") as wrong:
        with pytest.raises(SuperweightError) as e:
            wrong.models()
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert wrong.health()  # health needs no token
    with Client(superweight_server.address) as none:
        with pytest.raises(SuperweightError) as e:
            none.info()
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_tls_with_the_ca_and_token(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    with local_server(os.environ["SUPERWEIGHT_MODEL_ROOT"], tls_cert=str(cert),
                      tls_key=str(key)) as server:
        with server.client() as tls:
            assert tls.info().version == superweight.__version__
        with Client(server.address, token=server.token, timeout=5) as plain:
            with pytest.raises(SuperweightError) as e:
                plain.info()
            assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_results_are_plain_values_and_a_false_verdict_is_printed(sw):
    failed = sw.check(SMALL, reference=SMALL, super_weights=[(0, 1, 2)], window=64,
                      max_windows=1, max_perplexity_ratio=0.5)
    assert not failed.passed and failed.failures
    d = failed.to_dict()
    assert d["passed"] is False and d["super_weights"][0]["coordinate"]["layer"] == 0
    assert pickle.loads(pickle.dumps(failed)) == failed == copy.copy(failed)
    assert "passed" in dir(failed)


def test_a_wait_that_gives_up_leaves_the_job_running(sw):
    with pytest.raises(SuperweightError) as e:
        sw.ablate(SMOLLM2, super_weights=[(11, 507, 1229)], tasks=["wikitext2"],
                  max_windows=64, timeout=0.5)
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and e.value.job_id
    job = sw.job(e.value.job_id)
    assert job.state in ("QUEUED", "RUNNING") and job.id in e.value.message
    job.cancel()


def test_client_side_misuse_is_named(superweight_server, sw):
    with pytest.raises(TypeError, match=r"tasks takes a list"):
        sw.ablate(SMALL, tasks="wikitext2")
    with pytest.raises(ValueError, match="coordinate"):
        sw.score(SMALL, text="x", zero=[(0, 1)])
    single = sw.score(SMALL, text="Once upon a time.", zero=(0, 1, 2))  # one coordinate alone
    assert single.perplexity > 1
    # A token as read from its file, newline and all.
    with Client(superweight_server.address, token=superweight_server.token + "\n") as c:
        assert c.info().version == superweight.__version__
