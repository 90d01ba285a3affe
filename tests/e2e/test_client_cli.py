"""The client and the server as Unix tools: --help lists their own flags and exits 0; usage
errors (a bad flag, an unreadable or unwritable file named by a flag, contradictory flags) exit 2
and name the flag; watch exits 1 on a job that failed or was cancelled."""
import os
import re
import subprocess

import pytest

from conftest import BIN, ROOT, TESTDATA, kill_mid_score_job, restart_on_one_state_dir

CLIENT = os.path.join(BIN, "superweight")
SERVER = os.path.join(BIN, "superweightd")
VERBS = ["health", "info", "models", "locate", "score", "ablate", "quantize", "check", "jobs",
         "watch", "cancel"]


def run(*cmd):
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)


def flags_defined_in(source):
    with open(os.path.join(ROOT, source)) as f:
        return re.findall(r"ABSL_FLAG\(\s*[\w:]+,\s*(\w+),", f.read())


@pytest.mark.parametrize("help_flag", ["--help", "-h"])
def test_client_help_lists_every_verb_and_flag(help_flag):
    out = run(CLIENT, help_flag)
    assert out.returncode == 0, out.stderr
    usage = out.stdout.splitlines()[0]
    for verb in VERBS:
        assert verb in usage, usage
        assert re.search(rf"^{verb}\b", out.stdout, re.M), f"no section for {verb}"
    flags = flags_defined_in("client/flags.cc") + ["zero", "super_weights"]
    assert len(flags) > 30
    for flag in flags:
        assert f"--{flag}" in out.stdout, flag
    assert "Exit codes" in out.stdout


def test_client_help_for_one_verb():
    out = run(CLIENT, "score", "--help")
    assert out.returncode == 0, out.stderr
    assert "--zero" in out.stdout and "--server" in out.stdout
    assert "--threshold" not in out.stdout  # locate's


def test_server_help_lists_its_flags():
    out = run(SERVER, "--help")
    assert out.returncode == 0, out.stderr
    flags = flags_defined_in("server/main.cc")
    assert len(flags) > 10
    for flag in flags:
        assert f"--{flag}" in out.stdout, flag


@pytest.mark.parametrize("args,named", [
    (["--bogus", "models"], "bogus"),
    (["--window=x", "score"], "window"),
    (["--json=maybe", "models"], "json"),
    (["--timeout"], "timeout"),  # a value is missing
    (["--nowindow", "score"], "window"),  # --no prefixes booleans only
])
def test_client_flag_parse_errors_are_usage_errors(args, named):
    out = run(CLIENT, *args)
    assert out.returncode == 2, out.stderr
    assert named in out.stderr and "superweight:" in out.stderr, out.stderr


def test_server_flag_parse_errors_are_usage_errors():
    out = run(SERVER, "--max_tokens=many")
    assert out.returncode == 2, out.stderr
    assert "max_tokens" in out.stderr


def test_flag_forms_accepted(server):
    # --name value, --nobool, -name=value and a repeated --zero in both forms.
    out = server.client("score", "--model", "tinystories656k", "--text", "Once upon a time",
                        "--nobf16", "-json", "--zero=1,0,0", "--zero", "1,0,1")
    assert '"perplexity"' in out.stdout


def test_unreadable_text_file_is_the_clients_error(server, tmp_path):
    out = server.client("score", "--model=tinystories656k",
                        f"--text_file={tmp_path / 'missing.txt'}", check=False)
    assert out.returncode == 2 and "--text_file" in out.stderr, out.stderr
    assert "INVALID_ARGUMENT" not in out.stderr


def test_unreadable_ca_cert_is_the_clients_error(server, tmp_path):
    out = server.client("models", f"--ca_cert={tmp_path / 'missing.pem'}", check=False)
    assert out.returncode == 2 and "--ca_cert" in out.stderr, out.stderr


@pytest.mark.parametrize("content", [None, "\n"])
def test_unreadable_or_empty_token_file_is_the_clients_error(server, tmp_path, content):
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    out = server.client("models", f"--token_file={token_file}", token=False, check=False)
    assert out.returncode == 2 and "--token_file" in out.stderr, out.stderr
    assert "UNAUTHENTICATED" not in out.stderr


@pytest.mark.parametrize("verb,flags", [
    ("locate", ["--token_ids=1,403,407"]),
    ("ablate", ["--super_weights=1,37,101", "--settings=prune", "--tasks=wikitext2",
                "--window=128", "--max_windows=1"]),
    ("quantize", ["--bits=4", "--block_size=row", "--tasks=wikitext2", "--window=128",
                  "--max_windows=1"]),
])
def test_unwritable_plot_is_refused_before_the_job(server, tmp_path, verb, flags):
    model = "planted" if verb != "locate" else "stories260K/stories260K.bin"
    jobs_before = len(server.call("jobs")["jobs"])
    out = server.client(verb, f"--model={model}", *flags,
                        f"--plot={tmp_path / 'no' / 'such' / 'dir' / 'p.svg'}", check=False)
    assert out.returncode == 2 and "--plot" in out.stderr, out.stderr
    assert len(server.call("jobs")["jobs"]) == jobs_before  # nothing was run


def test_watch_exits_1_on_a_cancelled_job(server):
    text_file = os.path.join(TESTDATA, "text", "wiki.test.raw")
    job_id = server.client("score", "--model=smollm2.gguf", f"--text_file={text_file}",
                           "--window=512", "--no_wait").stdout.strip()
    server.client("cancel", f"--job={job_id}")
    out = server.client("watch", f"--job={job_id}", check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "CANCELLED" in out.stdout.splitlines()[-1] and "CANCELLED" in out.stderr


def test_watch_exits_1_on_a_failed_job(model_root, tmp_path):
    start = restart_on_one_state_dir(model_root, tmp_path)
    job_id = kill_mid_score_job(start)  # reported FAILED after the restart
    second = start()
    try:
        out = second.client("watch", f"--job={job_id}", check=False)
        assert out.returncode == 1, out.stdout + out.stderr
        assert "FAILED" in out.stdout.splitlines()[-1]
        assert "stopped" in out.stderr
        succeeded = second.client("score", "--model=tinystories656k", "--text=A job.",
                                  "--no_wait").stdout.strip()
        assert second.client("watch", f"--job={succeeded}").returncode == 0
    finally:
        second.stop()


@pytest.mark.parametrize("verb,flags,named", [
    ("score", ["--token_ids=1,2,3", "--text=a b c"], "--token_ids"),
    ("score", ["--text=a b c", "--text_file=/dev/null"], "--text_file"),
    ("score", ["--text=a b c", "--max_windows=2"], "--max_windows"),
    ("locate", ["--text=a b c", "--zero=1,2,3"], "--zero"),
    ("locate", ["--text=a b c", "--window=64"], "--window"),
    ("locate", ["--text=a b c", "--expect=1", "--skip_confirmation"], "--expect"),
    ("locate", ["--text=a b c", "--expect=1", "--no_wait"], "--no_wait"),
    ("locate", ["--text=a b c", "--plot=p.svg", "--no_wait"], "--no_wait"),
    ("models", ["--text=a b c"], "--text"),
    ("health", ["--json"], "--json"),
    ("watch", ["--job=job-000001", "--window=64"], "--window"),
    ("quantize", ["--export_name=x.gguf"], "--export_name"),
    ("quantize", ["--super_weight_tensor_type=F16"], "--super_weight_tensor_type"),
    ("quantize", ["--clip_value=3"], "--clip_value"),
    ("quantize", ["--activations_hold_largest=2"], "--activations_hold_largest"),
    ("quantize", ["--aware", "--restore"], "--restore"),
    ("ablate", ["--settings=prune", "--scales=0,1"], "--scales"),
    ("ablate", ["--settings=prune", "--outlier_fraction=1e-5"], "--outlier_fraction"),
    ("ablate", ["--settings=prune", "--token_prob_contexts=10"], "--token_prob_contexts"),
])
def test_contradictory_or_inapplicable_flags_are_refused(server, verb, flags, named):
    out = server.client(verb, "--model=tinystories656k", *flags, check=False) \
        if verb not in ("models", "health", "watch") else server.client(verb, *flags, check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert named in out.stderr, out.stderr
