"""The model families of today (Llama 3.x, Qwen3, OLMo 2, Gemma 2, Gemma 3) in the engine, against
llama.cpp on the GGUF files its own converter writes and against transformers where the .venv's
4.46 runs the family (Llama 3, Gemma 2). The models are small and random, made by
tools/make_test_model.py, with a planted super weight (and a clean twin)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import (ROOT, engine, engine_logits, family_models, llama_cpp_logits,
                      relative_error)

sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_test_model as mtm  # noqa: E402

pytestmark = pytest.mark.llama_cpp  # needs llama.cpp's build (make llama-cpp-test)

BENCH_PY = os.path.join(ROOT, ".venv-bench", "bin", "python")
EVAL = os.path.join(ROOT, "tools", "llama_cpp_eval.py")
FAMILIES = ("llama3", "qwen3", "olmo2", "gemma2", "gemma3")
PLANT = {"llama3": (1, 7, 101, 50.0), "qwen3": (0, 40, 17, 50.0), "olmo2": (1, 3, 150, 50.0),
         "gemma2": (1, 60, 33, 50.0), "gemma3": (4, 12, 90, 50.0)}
ARCH = {"llama3": "llama", "qwen3": "qwen3", "olmo2": "olmo2", "gemma2": "gemma2",
        "gemma3": "gemma3"}
# 40 tokens: past Gemma's test window of 8, so that sliding layers differ from global ones.
IDS = [1, 17, 200, 3, 45, 99, 128, 7, 7, 7, 250, 31, 64, 2, 180, 90, 11, 5, 42, 101,
       300, 411, 8, 9, 10, 499, 77, 66, 55, 44, 33, 22, 11, 256, 128, 64, 32, 16, 8, 4]
# llama.cpp against a float64 forward pass (f32 KV cache): about 2e-6 for the SiLU families; the
# Gemmas' GELU goes through an f16 table in ggml (about 3e-4).
LLAMA_CPP_BOUND = {"gemma2": 2e-3, "gemma3": 2e-3}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return family_models(tmp_path_factory, PLANT)


def llama_cpp(*args):
    run = subprocess.run([BENCH_PY, EVAL] + [str(a) for a in args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_against_llama_cpp_and_between_formats(models, family, tmp_path):
    hf, gguf = models[family, "clean"]
    assert engine("info", gguf)["architecture"] == ARCH[family]
    assert engine("info", hf)["architecture"] == ARCH[family]
    from_gguf = engine_logits(gguf, IDS, tmp_path)
    from_hf = engine_logits(hf, IDS, tmp_path)
    want = llama_cpp_logits(gguf, IDS, tmp_path)
    err = relative_error(from_gguf, want)
    between = relative_error(from_hf, from_gguf)
    print(f"{family}: against llama.cpp {err:.2e}, directory against GGUF {between:.2e}")
    assert err < LLAMA_CPP_BOUND.get(family, 1e-4)
    assert between < 1e-5


@pytest.mark.isa
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_against_the_numpy_forward_pass(models, family, tmp_path):
    hf, _ = models[family, "clean"]
    config, weights = mtm.load(hf)
    want = mtm.reference_forward(config, weights, IDS)[0]
    err = relative_error(engine_logits(hf, IDS, tmp_path), want)
    print(f"{family}: against the float64 reference {err:.2e}")
    assert err < 1e-5


@pytest.mark.parametrize("family", ["llama3", "gemma2"])
def test_logits_against_transformers(models, family, torch, tmp_path):
    from transformers import AutoModelForCausalLM
    hf, _ = models[family, "clean"]
    ref = AutoModelForCausalLM.from_pretrained(hf, torch_dtype=torch.float32,
                                               attn_implementation="eager").eval()
    with torch.no_grad():  # no cache: Gemma 2's HybridCache needs torch._dynamo (PyTorch 2)
        want = ref(torch.tensor([IDS]), use_cache=False).logits[0].numpy()
    err = relative_error(engine_logits(hf, IDS, tmp_path), want)
    print(f"{family}: against transformers {err:.2e}")
    assert err < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_perplexity_within_one_percent_of_llama_cpp_on_q8_0(models, family, tmp_path):
    _, gguf = models[family, "clean"]
    q8 = tmp_path / f"{family}-q8_0.gguf"
    llama_cpp("quantize", gguf, q8, "Q8_0")
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(",".join(map(str, IDS)))
    want = json.loads(llama_cpp("perplexity", q8, ids_file, "--kv=f32"))["perplexity"]
    got = engine("perplexity", str(q8), ids=",".join(map(str, IDS)), window=len(IDS))["perplexity"]
    print(f"{family} Q8_0: perplexity {got:.3f}, llama.cpp {want:.3f}")
    assert abs(got / want - 1) < 0.01


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fmt", [0, 1], ids=["huggingface", "gguf"])
def test_planted_super_weight_found_and_clean_twin_has_none(models, family, fmt):
    layer, row, col, _ = PLANT[family]
    planted = engine("locate", models[family, "planted"][fmt], ids=",".join(map(str, IDS[:20])))
    found = [(c["layer"], c["row"], c["col"]) for c in planted["candidates"]]
    assert found == [(layer, row, col)], planted["candidates"]
    clean = engine("locate", models[family, "clean"][fmt], ids=",".join(map(str, IDS[:20])))
    assert clean["candidates"] == []


@pytest.mark.parametrize("family", FAMILIES)
def test_hugging_face_export_is_the_same_model(models, family, tmp_path):
    """The engine's export of a GGUF source as a Hugging Face directory: transformers' own
    convention (Gemma's norms as w for 1 + w; Llama 3 scaling for llama.cpp's rope_freqs), read
    back by the engine as the same model."""
    _, gguf = models[family, "clean"]
    out = tmp_path / "exported"
    engine("export-hf", gguf, out=str(out))
    config = json.loads((out / "config.json").read_text())
    original = mtm.config_for(family)
    assert config["model_type"] == original["model_type"]
    if family == "llama3":  # found again from the 8 divisors llama.cpp's converter wrote
        assert config["rope_scaling"] == original["rope_scaling"]
    if family == "gemma2":
        from safetensors.numpy import load_file
        exported = load_file(str(out / "model.safetensors"))
        _, original = mtm.load(models[family, "clean"][0])
        name = "model.layers.0.post_feedforward_layernorm.weight"
        assert np.allclose(exported[name], original[name], atol=1e-6)
    assert relative_error(engine_logits(str(out), IDS, tmp_path),
                          engine_logits(gguf, IDS, tmp_path)) < 1e-5


@pytest.mark.isa
@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_within_the_stated_bound(models, family, tmp_path):
    """bf16 arithmetic (docs/cpus.md) on each family's new pieces: q/k norms, post-norms, GeGLU,
    soft-capping, sliding windows."""
    _, gguf = models[family, "clean"]
    err = relative_error(engine_logits(gguf, IDS, tmp_path, bf16=True),
                         engine_logits(gguf, IDS, tmp_path))
    print(f"{family}: bf16 against f32 {err:.2e}")
    assert err < 5e-2  # random weights: larger logits than a trained model's (3e-2 there)
