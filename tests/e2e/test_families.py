"""Today's model families through the server and the client: a Gemma 2 GGUF and a Qwen3
directory with a planted super weight, and a Qwen2-MoE GGUF with a super weight planted inside one
expert (small random models from tools/make_test_model.py; GGUFs by llama.cpp's converter).
Locate, Ablate, Quantize with a GGUF export that llama.cpp opens, and Check, each as a user runs
them; for the mixture of experts the (layer, expert, row, col) coordinate goes through the
client's syntax, the proto, the engine and the export."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from fast_gguf import GGUFReader

from conftest import ROOT, Server, coordinate

sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_test_model as mtm  # noqa: E402

pytestmark = pytest.mark.llama_cpp  # needs llama.cpp's build (make llama-cpp-test)

BENCH_PY = os.path.join(ROOT, ".venv-bench", "bin", "python")
GEMMA2 = (1, 60, 33, 50.0)
LLAMA3 = (1, 7, 101, 50.0)
QWEN3 = (0, 40, 17, 50.0)
MOE = (1, 3, 5, 7, 50.0)  # layer, expert, row, col, value
EVAL = ["--tasks=wikitext2", "--window=64", "--max_windows=2"]


@pytest.fixture(scope="module")
def family_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("family_models")
    mtm.make("gemma2", str(root / "gemma2-hf"), plant=GEMMA2)
    mtm.make("qwen3", str(root / "qwen3"), plant=QWEN3)
    mtm.make("qwen2_moe", str(root / "moe-hf"), plant=MOE)
    mtm.make("llama3", str(root / "llama3-hf"), plant=LLAMA3)
    mtm.to_gguf_many([(str(root / "gemma2-hf"), str(root / "gemma2.gguf"), "f32"),
                      (str(root / "moe-hf"), str(root / "moe.gguf"), "f32"),
                      (str(root / "llama3-hf"), str(root / "llama3.gguf"), "f32")])
    (root / "exports").mkdir()
    state = tmp_path_factory.mktemp("family_state")
    token = state / "token"
    token.write_text("t")
    s = Server(root, state / "jobs", token, extra=[f"--export_root={root}/exports"]).start()
    s.root = root
    yield s
    s.stop()


def llama_cpp_opens(path):
    """llama.cpp's logits of a few tokens of the file: finite, [tokens, vocab]."""
    out = os.path.join(os.path.dirname(path), "llama_cpp_logits.npy")
    run = subprocess.run([BENCH_PY, os.path.join(ROOT, "tools", "llama_cpp_eval.py"), "logits",
                          path, "1,17,200,3", out], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    logits = np.load(out)
    assert logits.shape == (4, 512) and np.isfinite(logits).all()


def test_models_lists_each_family(family_server):
    models = {m["name"]: m for m in family_server.call("models")["models"]}
    assert models["gemma2.gguf"]["architecture"] == "gemma2"
    assert models["qwen3"]["architecture"] == "qwen3"
    assert models["qwen3"]["experts"] == 0  # a dense model
    moe = models["moe.gguf"]
    assert (moe["architecture"], moe["experts"], moe["experts_per_token"]) == ("qwen2moe", 8, 2)
    assert (moe["intermediate_size"], moe["weight_dtype"]) == (48, "F32")  # the experts'


@pytest.mark.parametrize("model,plant", [("gemma2.gguf", GEMMA2), ("qwen3", QWEN3),
                                         ("llama3.gguf", LLAMA3)])
def test_locate_finds_the_planted_super_weight(family_server, model, plant):
    r = family_server.call("locate", f"--model={model}", "--skip_confirmation")["result"]
    assert [coordinate(s) for s in r["super_weights"]] == [plant[:3]]
    assert "expert" not in r["super_weights"][0]["coordinate"]


def test_gemma2_ablate_quantize_export_and_check(family_server):
    sw = "--super_weights={},{},{}".format(*GEMMA2[:3])
    rows = family_server.call("ablate", "--model=gemma2.gguf", sw, "--settings=prune,restore_sa",
                              *EVAL)["result"]["rows"]
    assert [r["setting"] for r in rows] == ["intact", "prune SW", "prune SW, restore SA"]
    ppl = [r["metrics"]["wikitext2/perplexity"] for r in rows]
    assert ppl[1] != ppl[0] and all(np.isfinite(ppl))
    r = family_server.call("quantize", "--model=gemma2.gguf", sw, "--bits=8", "--block_size=64",
                           "--restore", "--export=gguf:Q8_0", "--export_name=gemma2-q8.gguf",
                           "--super_weight_tensor_type=F16", *EVAL)["result"]
    assert r["exported"]["path"] == "gemma2-q8.gguf"
    path = str(family_server.root / "exports" / "gemma2-q8.gguf")
    types = {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}
    assert types[f"blk.{GEMMA2[0]}.ffn_down.weight"] == "F16"
    assert types["blk.0.ffn_down.weight"] == "Q8_0"
    assert types["blk.0.post_ffw_norm.weight"] == "F32"  # carried over as written
    llama_cpp_opens(path)
    ok = family_server.client("check", "--model=exports/gemma2-q8.gguf",
                              "--reference=gemma2.gguf", sw, "--window=64", "--max_windows=2",
                              check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_llama3_gguf_with_rope_freqs_exports_in_both_formats(family_server):
    """A Llama 3.x GGUF (its rope scaling as llama.cpp's rope_freqs divisors): the GGUF export
    carries them over for llama.cpp, the Hugging Face export writes them as rope_scaling."""
    sw = "--super_weights={},{},{}".format(*LLAMA3[:3])
    family_server.call("quantize", "--model=llama3.gguf", sw, "--bits=8", "--block_size=64",
                       "--restore", "--export=gguf:Q8_0", "--export_name=llama3-q8.gguf", *EVAL)
    path = str(family_server.root / "exports" / "llama3-q8.gguf")
    assert "rope_freqs.weight" in {t.name for t in GGUFReader(path).tensors}
    llama_cpp_opens(path)
    ok = family_server.client("check", "--model=exports/llama3-q8.gguf",
                              "--reference=llama3.gguf", sw, "--window=64", "--max_windows=2",
                              check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    family_server.call("quantize", "--model=llama3.gguf", sw, "--bits=8", "--block_size=64",
                       "--restore", "--export=hf:f32", "--export_name=llama3-hf-export", *EVAL)
    config = json.loads((family_server.root / "exports" / "llama3-hf-export" /
                         "config.json").read_text())
    assert config["rope_scaling"]["rope_type"] == "llama3"
    assert config["rope_scaling"]["original_max_position_embeddings"] == 16


def test_moe_expert_coordinate_end_to_end(family_server):
    layer, expert, row, col, _ = MOE
    located = family_server.call("locate", "--model=moe.gguf", "--skip_confirmation")["result"]
    c = located["super_weights"][0]["coordinate"]
    assert (coordinate(located["super_weights"][0]), c.get("expert")) == ((layer, row, col), expert)
    assert [(e["layer"], e.get("expert", 0)) for e in located["super_experts"]] == [(layer, expert)]
    text = family_server.client("locate", "--model=moe.gguf", "--skip_confirmation").stdout
    assert f"super expert {layer}:{expert}" in text, text

    sw = f"--super_weights={layer}:{expert},{row},{col}"
    other = (expert + 1) % 8
    r = family_server.call("ablate", "--model=moe.gguf", sw,
                           "--settings=prune,restore_sa,prune_experts",
                           f"--prune_experts={layer}:{expert}", f"--prune_experts={layer}:{other}",
                           *EVAL)["result"]
    assert [row_["setting"] for row_ in r["rows"]] == [
        "intact", "prune SW", "prune SW, restore SA", f"prune expert {layer}:{expert}",
        f"prune expert {layer}:{other}"]
    assert r["super_weights"][0].get("expert") == expert
    ppl = [row_["metrics"]["wikitext2/perplexity"] for row_ in r["rows"]]
    # Writing the expert's super activation back (at its one token) undoes part of what pruning
    # its weight did (the planted channel fires more weakly on the other tokens too).
    assert abs(np.log(ppl[2] / ppl[0])) < 0.8 * abs(np.log(ppl[1] / ppl[0])), ppl

    # Score with the expert's super weight zeroed (the client's LAYER:EXPERT syntax).
    ids = "--token_ids=" + ",".join(map(str, [1, 17, 200, 3, 45, 99, 128, 7, 250, 31]))
    intact = family_server.call("score", "--model=moe.gguf", ids)["result"]["perplexity"]
    zeroed = family_server.call("score", "--model=moe.gguf", ids,
                                f"--zero={layer}:{expert},{row},{col}")["result"]["perplexity"]
    shared = family_server.call("score", "--model=moe.gguf", ids,
                                f"--zero={layer},{row},{col}")["result"]["perplexity"]
    assert zeroed != intact and shared != zeroed

    # BF16: the experts' rows of 48 are no whole Q8_0 blocks.
    q = family_server.call("quantize", "--model=moe.gguf", sw, "--bits=8", "--block_size=row",
                           "--restore", "--export=gguf:BF16", "--export_name=moe-q8.gguf",
                           "--super_weight_tensor_type=F16", *EVAL)["result"]
    path = str(family_server.root / "exports" / "moe-q8.gguf")
    types = {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}
    assert types[f"blk.{layer}.ffn_down_exps.weight"] == "F16"  # the stacked experts, kept
    assert types[f"blk.{1 - layer}.ffn_down_exps.weight"] == "BF16"
    assert types[f"blk.{layer}.ffn_gate_inp.weight"] == "F32"  # the router, as llama.cpp keeps it
    llama_cpp_opens(path)
    assert q["super_weights"][0].get("expert") == expert
    checked = family_server.call("check", "--model=exports/moe-q8.gguf", "--reference=moe.gguf",
                                 sw, "--window=64", "--max_windows=2", check=False)["result"]
    assert checked.get("passed") is True, json.dumps(checked)
    assert checked["super_weights"][0]["coordinate"].get("expert") == expert
    human = family_server.client("check", "--model=exports/moe-q8.gguf", "--reference=moe.gguf",
                                 sw, "--window=64", "--max_windows=2", check=False)
    assert human.returncode == 0
    assert f"layers[{layer}].mlp.experts[{expert}].down_proj.weight[{row}, {col}]" in human.stdout


def test_prune_experts_rows_follow_the_flag(family_server):
    rows = family_server.call("ablate", "--model=moe.gguf", "--super_weights=1:3,5,7",
                              "--prune_experts=1:3", "--scales=0.5", *EVAL)["result"]["rows"]
    assert rows[-1]["setting"] == "prune expert 1:3"  # default settings, and the named rows


@pytest.mark.parametrize("model,flags,message", [
    ("qwen3", ["--settings=prune_experts", "--prune_experts=0:1"],
     "prune_experts: the model is not a mixture of experts"),
    ("qwen3", ["--super_weights=0:1,40,17"], "the model is not a mixture of experts"),
    ("moe.gguf", ["--settings=prune", "--prune_experts=1:3"], "the settings have no prune_experts"),
    ("moe.gguf", ["--settings=prune_experts", "--prune_experts=1:3", "--prune_experts=1:3"],
     "expert 1:3 is given more than once"),
])
def test_expert_requests_that_cannot_mean_anything_are_refused(family_server, model, flags,
                                                              message):
    out = family_server.client("ablate", f"--model={model}", *flags, *EVAL, check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr
    zeroed = family_server.client("score", "--model=qwen3", "--token_ids=1,2,3", "--zero=0:1,4,5",
                                  check=False)
    assert "the model is not a mixture of experts" in zeroed.stderr, zeroed.stderr


@pytest.mark.parametrize("flags,message", [
    (["--super_weights=1:9,5,7"], "expert 9 outside layer 1's 8 experts"),
    (["--super_weights=1,5,700"], "outside layers[1].mlp.down_proj.weight[64, 80]"),
    (["--super_weights=1:-1,5,7"], "LAYER[:EXPERT],ROW,COL"),
    (["--settings=prune_experts"], "prune_experts names no experts"),
    (["--settings=prune_experts", "--prune_experts=1:8"], "outside the model's 2 layers of 8"),
])
def test_bad_expert_coordinates_are_refused(family_server, flags, message):
    out = family_server.client("ablate", "--model=moe.gguf", *flags, *EVAL, check=False)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


def test_quantize_holds_the_super_expert_at_full_precision(family_server):
    """--keep_super_experts: the experts holding a super weight are not rounded at all; the
    Hugging Face export of the setting shows it tensor by tensor."""
    layer, expert, row, col, _ = MOE
    sw = f"--super_weights={layer}:{expert},{row},{col}"
    held = family_server.call("quantize", "--model=moe.gguf", sw, "--bits=3", "--block_size=row",
                              "--restore", "--keep_super_experts", "--export=hf:f32",
                              "--export_name=moe-se", *EVAL)["result"]
    assert [r["setting"] for r in held["rows"]] == ["FP", "INT3 brow +SW +SE"]
    from safetensors.numpy import load_file
    exported = load_file(str(family_server.root / "exports" / "moe-se" / "model.safetensors"))
    config, original = mtm.load(str(family_server.root / "moe-hf"))
    other = (expert + 1) % 8
    for kind in ("gate", "up", "down"):
        kept = mtm.expert_names(config, layer, expert)[kind]
        rounded = mtm.expert_names(config, layer, other)[kind]
        assert np.array_equal(exported[kept], original[kept]), kept
        assert not np.array_equal(exported[rounded], original[rounded]), rounded
    out = family_server.client("quantize", "--model=moe.gguf", "--bits=3", "--block_size=row",
                               "--keep_super_experts", "--super_weights=1,5,7", *EVAL,
                               check=False)
    assert out.returncode != 0  # a shared expert's super weight: no routed expert to keep
    assert "no super weight is in a routed expert" in out.stderr, out.stderr
