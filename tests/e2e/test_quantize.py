"""Quantize through the real server and client: the table's rows and errors, the super weights
from Locate by default, bad settings refused, cancellation, and the result after a restart."""
import hashlib
import os
import shutil
import subprocess

import numpy as np
import pytest
from fast_gguf import GGUFReader

from conftest import (BIN, PLANTED, ROOT, Server, check_cancel_mid_job_kept_across_a_restart,
                      coordinate, zero_super_weight_q8_0)

SMALL = ["--tasks=wikitext2,piqa", "--max_examples=4", "--window=128", "--max_windows=1"]


def test_rows_in_order_with_metrics_and_the_super_weight_restored(server):
    layer, row, col = PLANTED
    r = server.call("quantize", "--model=planted", f"--super_weights={layer},{row},{col}",
                    "--bits=8,2", "--block_size=row,tensor", "--aware", *SMALL)["result"]
    assert r["super_weights_source"] == "request"
    assert [coordinate({"coordinate": c}) for c in r["super_weights"]] == [PLANTED]
    names = [row["setting"] for row in r["rows"]]
    assert names == ["FP", "INT8 brow", "INT8 brow z=9 +SW", "INT8 btensor",
                     "INT8 btensor z=9 +SW", "INT2 brow", "INT2 brow z=9 +SW", "INT2 btensor",
                     "INT2 btensor z=9 +SW"]
    rows = {row["setting"]: row for row in r["rows"]}
    for row in r["rows"]:
        m = row["metrics"]
        for name in ("wikitext2/perplexity", "piqa/acc", "piqa/acc_norm", "average/acc",
                     "weights/mse", "super_weights/max_rel_error"):
            assert name in m, (row["setting"], name)
        assert row["examples"] == {"piqa": 4}
    fp = rows["FP"]["metrics"]
    assert fp["weights/mse"] == 0
    # INT8 per row is close to the stored model; INT2 over the whole tensor is not, and clipping
    # the planted outlier (4000), which widens plain RTN's step, helps.
    assert abs(rows["INT8 brow"]["metrics"]["wikitext2/perplexity"] / fp["wikitext2/perplexity"]
               - 1) < 0.02
    plain, aware = rows["INT2 btensor"]["metrics"], rows["INT2 btensor z=9 +SW"]["metrics"]
    assert plain["wikitext2/perplexity"] > 2 * fp["wikitext2/perplexity"]
    assert aware["weights/mse"] < plain["weights/mse"]
    assert aware["wikitext2/perplexity"] < plain["wikitext2/perplexity"]
    assert aware["super_weights/max_rel_error"] == 0
    assert rows["INT2 btensor z=9 +SW"]["super_weight_relative_error"] == [0]
    assert rows["INT2 btensor z=9 +SW"]["spec"]["restore_super_weights"]
    assert rows["INT2 btensor z=9 +SW"]["spec"]["clip"] == "z"


def test_smollm2_super_weight_from_locate(server):
    r = server.call("quantize", "--model=smollm2.gguf", "--bits=8", "--block_size=row",
                    "--tasks=wikitext2", "--window=256", "--max_windows=1", "--restore")["result"]
    assert r["super_weights_source"] == "locate"
    assert [coordinate({"coordinate": c}) for c in r["super_weights"]] == [(11, 507, 1229)]
    fp, q = (row["metrics"] for row in r["rows"])
    assert q["super_weights/max_rel_error"] == 0
    assert abs(q["wikitext2/perplexity"] / fp["wikitext2/perplexity"] - 1) < 0.05


def test_int8_activations_with_the_super_activation_held_out(server):
    r = server.call("quantize", "--model=smollm2.gguf", "--activations_int8", "--tasks=wikitext2",
                    "--window=256", "--max_windows=2")["result"]
    assert [coordinate({"coordinate": c}) for c in r["super_weights"]] == [(11, 507, 1229)]
    rows = {row["setting"]: row for row in r["rows"]}
    assert list(rows) == ["FP", "A8", "A8 SA held out", "INT8 brow A8", "INT8 brow A8 SA held out"]
    ppl = {name: row["metrics"]["wikitext2/perplexity"] for name, row in rows.items()}
    # Per-tensor INT8 activations hurt this model, held out or not. Which of the two is better
    # over two short windows is chance (the oracle compares them over 16 windows of 512).
    for plain, held in (("A8", "A8 SA held out"), ("INT8 brow A8", "INT8 brow A8 SA held out")):
        assert ppl["FP"] < ppl[held] != ppl[plain] > ppl["FP"], ppl
        assert rows[held]["spec"]["hold_out_super_activations"]
        assert rows[plain]["spec"]["activation_bits"] == rows[held]["spec"]["activation_bits"] == 8
    assert rows["A8"]["metrics"]["weights/mse"] == 0
    assert rows["INT8 brow A8"]["metrics"]["weights/mse"] > 0


def test_int8_activations_with_each_tensors_largest_held_out(server):
    r = server.call("quantize", "--model=planted", "--super_weights=1,37,101", "--activations_int8",
                    "--activations_hold_largest=2", "--tasks=wikitext2", "--window=128",
                    "--max_windows=1")["result"]
    rows = {row["setting"]: row for row in r["rows"]}
    assert list(rows) == ["FP", "A8", "A8 SA held out", "A8 top-2 held out", "INT8 brow A8",
                          "INT8 brow A8 SA held out", "INT8 brow A8 top-2 held out"]
    assert rows["A8 top-2 held out"]["spec"]["hold_out_largest_activations"] == 2
    assert rows["A8 top-2 held out"]["spec"]["hold_out_super_activations"] is False
    ppl = {name: row["metrics"]["wikitext2/perplexity"] for name, row in rows.items()}
    assert ppl["A8 top-2 held out"] not in (ppl["A8"], ppl["FP"]), ppl
    out = server.client("quantize", "--model=planted", "--super_weights=1,37,101",
                        "--activations_int8", "--activations_hold_largest=65", check=False)
    assert out.returncode == 1 and "INVALID_ARGUMENT" in out.stderr and "0..64" in out.stderr, \
        out.stderr


def test_table_and_plot_on_a_terminal_free_run(server, tmp_path):
    plot = tmp_path / "fig7.svg"
    out = server.client("quantize", "--model=planted", "--super_weights=1,37,101", "--bits=4",
                        "--block_size=64,4096,tensor", "--aware", f"--plot={plot}",
                        "--tasks=wikitext2", "--window=128", "--max_windows=1")
    lines = out.stdout.splitlines()
    assert lines[0].startswith("job ") and "layers[1].mlp.down_proj.weight[37, 101]" in lines[0]
    assert lines[1].split()[:2] == ["setting", "wikitext2/perplexity"]
    assert [line.split()[0] for line in lines[2:]] == ["FP"] + ["INT4"] * 6
    svg = plot.read_text()
    assert svg.startswith("<svg") and "RTN" in svg and "SW-aware" in svg and "tensor" in svg


@pytest.mark.parametrize("flags,message", [
    (["--bits=0"], "bits"),
    (["--bits=9"], "bits"),
    (["--block_size=1"], "block size"),
    (["--clip=bogus"], "unknown clip method"),
    (["--clip=z", "--clip_value=-1"], "clip value"),
    (["--clip=block_top", "--clip_value=2"], "below 1"),
    (["--bits=4", "--super_weights=1,9999,0"], "outside"),
    (["--bits=4", "--tasks=mmlu"], "unknown task"),
    (["--bits=4", "--window=1"], "window"),
])
def test_bad_settings_are_refused(server, flags, message):
    out = server.client("quantize", "--model=planted", "--super_weights=1,37,101", *flags,
                        check=False)
    assert out.returncode == 1, out.stderr
    assert "INVALID_ARGUMENT" in out.stderr and message in out.stderr, out.stderr
    assert server.client("models").returncode == 0


def test_block_size_zero_and_negative_are_usage_errors(server):
    for bad in ("0", "-3", "x"):
        out = server.client("quantize", "--model=planted", f"--block_size={bad}", check=False)
        assert out.returncode == 2 and "--block_size" in out.stderr, out.stderr


def test_cancelled_mid_job_and_kept_across_a_restart(model_root, tmp_path, job_store_flags):
    check_cancel_mid_job_kept_across_a_restart(
        model_root, tmp_path, "quantize",
        ["--model=planted", "--super_weights=1,37,101", "--bits=4", "--block_size=row", *SMALL],
        ["--model=smollm2.gguf", "--super_weights=11,507,1229"],
        job_store_flags)


@pytest.fixture(scope="module")
def exporting(model_root, tmp_path_factory):
    """A server that may write exports, under its model root (so it serves them by name)."""
    state = tmp_path_factory.mktemp("export_state")
    token = state / "token"
    token.write_text("t")
    s = Server(model_root, state / "jobs", token,
               extra=[f"--export_root={model_root}/exports"]).start()
    yield s
    s.stop()


def test_gguf_export_is_written_reported_and_served(exporting, model_root):
    r = exporting.call("quantize", "--model=smollm2.gguf", "--super_weights=11,507,1229",
                       "--bits=4", "--block_size=65536", "--restore", "--export=gguf:Q8_0",
                       "--export_name=smol-q8.gguf", "--super_weight_tensor_type=F16",
                       "--tasks=wikitext2", "--window=128", "--max_windows=1")["result"]
    names = [row["setting"] for row in r["rows"]]
    assert names == ["FP", "INT4 b65536 +SW", "export Q8_0 +SW F16"]
    e = r["exported"]
    path = model_root / "exports" / "smol-q8.gguf"
    assert e["format"] == "gguf:Q8_0" and e["path"] == "smol-q8.gguf"
    assert e["model"] == "exports/smol-q8.gguf"
    assert int(e["bytes"]) == path.stat().st_size
    assert e["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in (model_root / "exports").iterdir()] == ["smol-q8.gguf"]
    fp, exported = r["rows"][0]["metrics"], r["rows"][2]["metrics"]
    # Q8_0 of the Q4_1 source is nearly lossless; the super weight's tensor is F16.
    assert abs(exported["wikitext2/perplexity"] / fp["wikitext2/perplexity"] - 1) < 0.02
    assert exported["super_weights/max_rel_error"] < 1e-3
    reader = GGUFReader(str(path))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.11.ffn_down.weight"] == "F16"
    assert types["blk.10.ffn_down.weight"] == "Q8_0" and types["blk.0.attn_q.weight"] == "Q8_0"
    source = {t.name: t.tensor_type.name for t in GGUFReader(str(model_root / "smollm2.gguf")).tensors}
    assert types["token_embd.weight"] == source["token_embd.weight"]  # carried over as stored
    setting = reader.get_field("superweight.setting")
    assert bytes(setting.parts[setting.data[0]]).decode() == "INT4 b65536 +SW"
    # The server opens the export by name at once.
    scored = exporting.call("score", "--model=exports/smol-q8.gguf", "--text=The cat sat on the mat.")
    assert scored["result"]["perplexity"] > 1


def test_gguf_export_in_q4_k_takes_llama_cpps_fallback_where_blocks_do_not_fit(exporting,
                                                                               model_root):
    """SmolLM2's 576-value rows are not whole 256-value Q4_K blocks: those tensors are Q5_0, as
    llama-quantize writes them; the ffn_down (1536) are Q4_K, the super weight's Q8_0."""
    r = exporting.call("quantize", "--model=smollm2.gguf", "--super_weights=11,507,1229",
                       "--bits=4", "--block_size=65536", "--restore", "--export=gguf:Q4_K",
                       "--export_name=smol-q4k.gguf", "--super_weight_tensor_type=Q8_0",
                       "--tasks=wikitext2", "--window=128", "--max_windows=1")["result"]
    assert [row["setting"] for row in r["rows"]] == ["FP", "INT4 b65536 +SW",
                                                     "export Q4_K +SW Q8_0"]
    assert r["exported"]["format"] == "gguf:Q4_K"
    reader = GGUFReader(str(model_root / "exports" / "smol-q4k.gguf"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.11.ffn_down.weight"] == "Q8_0"
    assert types["blk.10.ffn_down.weight"] == "Q4_K" and types["blk.0.ffn_down.weight"] == "Q4_K"
    assert types["blk.0.attn_q.weight"] == "Q5_0" and types["blk.29.ffn_up.weight"] == "Q5_0"
    file_type = reader.get_field("general.file_type")
    assert int(file_type.parts[file_type.data[0]][0]) == 14  # LLAMA_FTYPE_MOSTLY_Q4_K_S
    fp, exported = r["rows"][0]["metrics"], r["rows"][2]["metrics"]
    assert exported["wikitext2/perplexity"] / fp["wikitext2/perplexity"] < 1.5
    assert exported["super_weights/max_rel_error"] < 1e-2


def test_gguf_export_as_llama_quantizes_q4_k_m_with_the_super_weight_kept(exporting, model_root,
                                                                          tmp_path):
    """gguf:Q4_K_M: every tensor in the type llama-quantize's Q4_K_M mix gives it (the tied
    embedding too), the super weight's down_proj at F16 as `--tensor-type` would put it; the
    tensors are those the engine's llama-quantize emulation writes for the same command line
    (which the oracle tests hold byte-identical with llama.cpp's)."""
    r = exporting.call("quantize", "--model=smollm2.gguf", "--super_weights=11,507,1229",
                       "--bits=4", "--block_size=65536", "--restore", "--export=gguf:Q4_K_M",
                       "--export_name=smol-q4km.gguf", "--super_weight_tensor_type=F16",
                       "--tasks=wikitext2", "--window=128", "--max_windows=1")["result"]
    assert [row["setting"] for row in r["rows"]] == ["FP", "INT4 b65536 +SW",
                                                     "export Q4_K_M +SW F16"]
    assert r["exported"]["format"] == "gguf:Q4_K_M"
    ours = GGUFReader(str(model_root / "exports" / "smol-q4km.gguf"))
    types = {t.name: t.tensor_type.name for t in ours.tensors}
    assert types["blk.11.ffn_down.weight"] == "F16"
    assert types["token_embd.weight"] == "Q8_0"
    # The override leaves llama.cpp's ffn_down count one behind after layer 11: 12 is raised.
    assert types["blk.12.ffn_down.weight"] == "Q6_K" and types["blk.14.ffn_down.weight"] == "Q4_K"
    file_type = ours.get_field("general.file_type")
    assert int(file_type.parts[file_type.data[0]][0]) == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    emulated = tmp_path / "emulated.gguf"
    subprocess.run([os.path.join(BIN, "superweight-engine"), "requantize", str(model_root / "smollm2.gguf"), "--file_type=Q4_K_M",
                    r"--tensor_type=^blk\.11\.ffn_down\.weight$=F16", f"--out={emulated}"],
                   check=True, capture_output=True)
    theirs = {t.name: t for t in GGUFReader(str(emulated)).tensors}
    for t in ours.tensors:
        assert t.tensor_type == theirs[t.name].tensor_type, t.name
        assert np.array_equal(np.asarray(t.data).view(np.uint8),
                              np.asarray(theirs[t.name].data).view(np.uint8)), t.name
    fp, exported = r["rows"][0]["metrics"], r["rows"][2]["metrics"]
    assert exported["wikitext2/perplexity"] / fp["wikitext2/perplexity"] < 1.2
    assert exported["super_weights/max_rel_error"] < 1e-3


@pytest.mark.parametrize("flags,code,message", [
    (["--export=gguf:Q4_0", "--export_name=../escape.gguf"], "INVALID_ARGUMENT", "export_name"),
    (["--export=gguf:Q4_0", "--export_name=sub/x.gguf"], "INVALID_ARGUMENT", "export_name"),
    (["--export=gguf:Q4_0"], "INVALID_ARGUMENT", "export_name"),
    (["--export=gguf:IQ2_XXS", "--export_name=k.gguf"], "INVALID_ARGUMENT", "gguf:mix:FILE_TYPE"),
    (["--export=gguf:mix:Q4_K_X", "--export_name=k.gguf"], "INVALID_ARGUMENT", "Q4_K_M"),
    # A type's name in another case is no mix by accident: mixes say mix: or _S/_M/_L.
    (["--export=gguf:q4_k", "--export_name=k.gguf"], "INVALID_ARGUMENT", "gguf:mix:FILE_TYPE"),
    (["--export=onnx", "--export_name=o"], "INVALID_ARGUMENT", "unknown export"),
    (["--block_size=64,128", "--export=gguf:Q4_0", "--export_name=two.gguf"], "INVALID_ARGUMENT",
     "exactly one"),
    (["--activations_int8", "--export=gguf:Q4_0", "--export_name=a8.gguf"], "INVALID_ARGUMENT",
     "activation quantization happens at run time"),
])
def test_bad_exports_are_refused_and_nothing_is_written(exporting, model_root, flags, code,
                                                        message):
    before = sorted(p.name for p in (model_root / "exports").iterdir())
    out = exporting.client("quantize", "--model=smollm2.gguf", "--super_weights=11,507,1229",
                           "--bits=4", "--block_size=64", *flags, check=False)
    assert out.returncode == 1 and code in out.stderr and message in out.stderr, out.stderr
    assert sorted(p.name for p in (model_root / "exports").iterdir()) == before


def test_exports_need_an_export_root_and_a_gguf_source(server, exporting):
    out = server.client("quantize", "--model=smollm2.gguf", "--super_weights=11,507,1229",
                        "--bits=4", "--export=gguf:Q4_0", "--export_name=a.gguf", check=False)
    assert out.returncode == 1 and "INVALID_ARGUMENT" in out.stderr
    assert "--export_root" in out.stderr
    out = exporting.client("quantize", "--model=planted", "--super_weights=1,37,101", "--bits=4",
                           "--block_size=64", "--export=gguf:Q4_0", "--export_name=b.gguf",
                           check=False)
    assert out.returncode == 1 and "FAILED_PRECONDITION" in out.stderr, out.stderr


def test_an_existing_export_is_never_overwritten(exporting, model_root):
    target = model_root / "exports" / "kept.gguf"
    target.write_bytes(b"precious")
    out = exporting.client("quantize", "--model=smollm2.gguf", "--super_weights=11,507,1229",
                           "--bits=4", "--block_size=64", "--export=gguf:Q4_0",
                           "--export_name=kept.gguf", check=False)
    assert out.returncode == 1 and "ALREADY_EXISTS" in out.stderr, out.stderr
    assert target.read_bytes() == b"precious"


def test_hf_export_is_the_settings_model_and_served(exporting, model_root):
    r = exporting.call("quantize", "--model=planted", "--super_weights=1,37,101", "--bits=8",
                       "--block_size=row", "--export=hf:f32", "--export_name=planted-int8",
                       "--tasks=wikitext2", "--window=128", "--max_windows=1")["result"]
    assert [row["setting"] for row in r["rows"]] == ["FP", "INT8 brow"]
    e = r["exported"]
    directory = model_root / "exports" / "planted-int8"
    assert e["format"] == "hf:f32" and e["model"] == "exports/planted-int8"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in directory.iterdir()}
    weights = (directory / "model.safetensors").read_bytes()
    assert e["sha256"] == hashlib.sha256(weights).hexdigest() and int(e["bytes"]) == len(weights)
    # Served at once, and the same model as the setting's row: the same perplexity.
    wikitext = os.path.join(ROOT, "server", "data", "eval", "wikitext2", "wiki.test.raw")
    scored = exporting.call("score", "--model=exports/planted-int8", f"--text_file={wikitext}",
                            "--window=128", "--max_windows=1")["result"]
    row = r["rows"][1]["metrics"]["wikitext2/perplexity"]
    assert abs(scored["perplexity"] / row - 1) < 1e-5, (scored["perplexity"], row)


def test_check_passes_a_good_quantization_and_fails_a_lost_super_weight(exporting, model_root):
    good, bad = model_root / "good-q8.gguf", model_root / "bad-q8.gguf"
    subprocess.run([os.path.join(BIN, "superweight-engine"), "requantize",
                    str(model_root / "smollm2.gguf"), "--type=Q8_0", f"--out={good}"],
                   check=True, capture_output=True)
    zero_super_weight_q8_0(good, bad)
    ok = exporting.client("check", "--model=good-q8.gguf", "--reference=smollm2.gguf",
                          "--window=256", "--max_windows=2", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "keeps the super weights of smollm2.gguf (locate): yes" in ok.stdout
    lost = exporting.client("check", "--model=bad-q8.gguf", "--reference=smollm2.gguf",
                            "--super_weights=11,507,1229", "--window=256", "--max_windows=2",
                            check=False)
    assert lost.returncode == 3, lost.stdout + lost.stderr
    assert "LOST" in lost.stdout and "failed: layers[11].mlp.down_proj.weight[507, 1229] is 0" \
        in lost.stdout, lost.stdout
    r = exporting.call("check", "--model=bad-q8.gguf", "--reference=smollm2.gguf",
                       "--super_weights=11,507,1229", "--window=256", "--max_windows=2",
                       check=False)["result"]
    sw = r["super_weights"][0]
    assert not r.get("passed", False) and sw.get("model_value", 0) == 0
    assert abs(sw["model_activation"]) < 0.5 * abs(sw["reference_activation"])
    assert r["perplexity_ratio"] > 1.5


LLAMA_QUANTIZE = r"""
import ctypes, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = 7  # LLAMA_FTYPE_MOSTLY_Q8_0
params.allow_requantize = True
params.nthread = 2
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(),
                                        ctypes.byref(params)))
"""


@pytest.mark.llama_cpp
def test_check_passes_llama_quantizes_own_quantization(exporting, model_root):
    """The CI gate on a file made by llama.cpp's quantizer (llama-quantize's library call) from the
    same source, with its own choices of tensor types."""
    out = model_root / "llama-q8.gguf"
    subprocess.run([os.path.join(ROOT, ".venv-bench", "bin", "python"), "-c", LLAMA_QUANTIZE,
                    str(model_root / "smollm2.gguf"), str(out)], check=True, capture_output=True)
    ok = exporting.client("check", "--model=llama-q8.gguf", "--reference=smollm2.gguf",
                          "--super_weights=11,507,1229", "--window=256", "--max_windows=2",
                          check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "keeps the super weights of smollm2.gguf (request): yes" in ok.stdout


def test_check_refuses_models_of_different_shapes_and_bad_bounds(exporting):
    out = exporting.client("check", "--model=planted", "--reference=smollm2.gguf",
                           "--super_weights=11,507,1229", check=False)
    assert out.returncode == 1 and "FAILED_PRECONDITION" in out.stderr, out.stderr
    out = exporting.client("check", "--model=smollm2.gguf", "--reference=smollm2.gguf",
                           "--max_ppl_ratio=-1", check=False)
    assert out.returncode == 1 and "INVALID_ARGUMENT" in out.stderr, out.stderr
    out = exporting.client("check", "--model=smollm2.gguf", check=False)
    assert out.returncode == 2 and "--reference" in out.stderr
