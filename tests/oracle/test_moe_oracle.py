"""Mixture-of-experts models (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE) in the engine: logits against
llama.cpp on the GGUF its converter writes (stacked expert tensors read in place) and against
transformers where 4.46 runs the family; a planted super weight inside one expert found with its
expert, that expert flagged as the super expert, and pruning it from routing against pruning
another expert of the same layer. Small random models made by tools/make_test_model.py."""
import json
import math
import os
import shutil
import sys

import pytest

from conftest import (ROOT, engine, engine_logits, family_models, llama_cpp_logits,
                      relative_error)

sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_test_model as mtm  # noqa: E402

pytestmark = pytest.mark.llama_cpp  # needs llama.cpp's build (make llama-cpp-test)

FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")
# (layer, expert, row, col, value) of the planted super weight.
PLANT = {"mixtral": (1, 5, 20, 7, 50.0), "qwen2_moe": (0, 3, 5, 7, 50.0),
         "qwen3_moe": (1, 6, 40, 30, 50.0), "olmoe": (0, 2, 11, 40, 50.0)}
ARCH = {"mixtral": "mixtral", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe", "olmoe": "olmoe"}
IDS = [1, 17, 200, 3, 45, 99, 128, 7, 7, 7, 250, 31, 64, 2, 180, 90, 11, 5, 42, 101,
       300, 411, 8, 9, 10, 499, 77, 66, 55, 44, 33, 22]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return family_models(tmp_path_factory, PLANT)


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_against_llama_cpp_and_between_formats(models, family, tmp_path):
    hf, gguf = models[family, "planted"]
    info = engine("info", gguf)
    assert (info["architecture"], info["experts"], info["experts_per_token"]) == \
        (ARCH[family], 8, 2)
    from_gguf = engine_logits(gguf, IDS, tmp_path)
    err = relative_error(from_gguf, llama_cpp_logits(gguf, IDS, tmp_path))
    between = relative_error(engine_logits(hf, IDS, tmp_path), from_gguf)
    print(f"{family}: against llama.cpp {err:.2e}, directory against GGUF {between:.2e}")
    assert err < 1e-4
    assert between < 1e-5


@pytest.mark.isa
@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "olmoe"])
def test_logits_against_transformers(models, family, torch, tmp_path):
    from transformers import AutoModelForCausalLM
    hf, _ = models[family, "planted"]
    ref = AutoModelForCausalLM.from_pretrained(hf, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        want = ref(torch.tensor([IDS]), use_cache=False).logits[0].numpy()
    err = relative_error(engine_logits(hf, IDS, tmp_path), want)
    print(f"{family}: against transformers {err:.2e}")
    assert err < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fmt", [0, 1], ids=["huggingface", "gguf"])
def test_planted_super_weight_found_in_its_expert(models, family, fmt):
    layer, expert, row, col, _ = PLANT[family]
    r = engine("locate", models[family, "planted"][fmt], ids=",".join(map(str, IDS[:16])))
    found = [(c["layer"], c["expert"], c["row"], c["col"]) for c in r["candidates"]]
    assert found == [(layer, expert, row, col)], r["candidates"]
    assert [(e["layer"], e["expert"]) for e in r["super_experts"]] == [(layer, expert)]
    assert len(r["expert_maxima"]) == 2 * 8
    clean = engine("locate", models[family, "clean"][fmt], ids=",".join(map(str, IDS[:16])))
    assert clean["candidates"] == []
    assert clean["super_experts"] == []  # the largest of ordinary maxima is no super expert


@pytest.mark.parametrize("family", FAMILIES)
def test_pruning_the_super_expert_hurts_far_more_than_another_expert(models, family):
    """On text the intact model itself wrote (greedy), where a random model is at its best: the
    expert that holds the super weight carries it, another expert of its layer does not."""
    layer, expert, _, _, _ = PLANT[family]
    gguf = models[family, "planted"][1]
    text = engine("generate", gguf, ids="1", steps=63)["ids"]
    ids = ",".join(map(str, text))

    def perplexity(*pruned):
        flags = [f"--prune_expert={layer}:{e}" for e in pruned]
        return engine("perplexity", gguf, *flags, ids=ids, window=len(text))["perplexity"]

    intact = perplexity()
    super_expert = perplexity(expert) / intact
    other = perplexity((expert + 1) % 8) / intact
    print(f"{family}: perplexity x{super_expert:.3g} without the super expert, x{other:.3g} "
          f"without expert {(expert + 1) % 8}")
    # The mean log-likelihood lost: at least three times as much.
    assert super_expert > 2 and math.log(super_expert) > 3 * math.log(max(other, 1.0))


@pytest.mark.parametrize("family", ["qwen2_moe", "mixtral"])
def test_expert_coordinates_through_quantization_and_exports(models, family, tmp_path):
    """An expert's super weight kept by round-to-nearest quantization where named, and the
    experts written back: as a Hugging Face directory and (stacked) as a GGUF, each the same
    model again."""
    layer, expert, row, col, value = PLANT[family]
    _, gguf = models[family, "planted"]
    out = tmp_path / "exported"
    engine("export-hf", gguf, out=str(out))
    assert relative_error(engine_logits(str(out), IDS, tmp_path),
                          engine_logits(gguf, IDS, tmp_path)) < 1e-5
    from safetensors.numpy import load_file
    tensors = load_file(str(out / "model.safetensors"))
    down = mtm.expert_names(mtm.load(models[family, "planted"][0])[0], layer, expert)["down"]
    assert tensors[down][row, col] == pytest.approx(value)


@pytest.mark.isa
@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_within_the_stated_bound_where_routing_is_no_choice(models, family, tmp_path):
    """In bf16 a token near a tie between experts may take another one: transformers' own bf16
    moved a random Mixtral's logits by 0.39 of the largest from its f32, and the engine's by as
    much; which token flips depends on every rounding. With every expert chosen (k = experts,
    the routing a weighting, not a choice) bf16 keeps the dense families' bound."""
    hf, _ = models[family, "clean"]
    every = tmp_path / "every-expert"
    shutil.copytree(hf, every)
    config = json.loads((every / "config.json").read_text())
    config["num_experts_per_tok"] = config.get("num_local_experts", config.get("num_experts"))
    (every / "config.json").write_text(json.dumps(config))
    err = relative_error(engine_logits(str(every), IDS, tmp_path, bf16=True),
                         engine_logits(str(every), IDS, tmp_path))
    print(f"{family}: bf16 against f32, every expert chosen: {err:.2e}")
    assert err < 5e-2  # random weights: larger logits than a trained model's (3e-2 there)
