"""tools/make_test_model.py, the random-weight test models of the model families, and
tools/llama_cpp_eval.py, llama.cpp's side: what the other oracle tests take from them. Each
family's directory has the config its transformers class saves and the tensors its modeling file
names; llama.cpp's converter makes a GGUF file of it that llama.cpp runs to the logits of the
tool's numpy forward pass (and, for the families transformers 4.46 has, to transformers'); a
planted super weight is where the paper's locator looks. No engine: tooling only."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, TINYSTORIES_TEXT, relative_error

sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_test_model as mtm  # noqa: E402

pytestmark = pytest.mark.formats  # no engine, no CPU-class dispatch: once, at full ISA

BENCH_PY = os.path.join(ROOT, ".venv-bench", "bin", "python")
EVAL = os.path.join(ROOT, "tools", "llama_cpp_eval.py")
# (layer, row, col, value); gemma3's in a sliding layer before its global one.
PLANTS = {"llama3": (0, 5, 7, 50.0), "qwen3": (0, 11, 100, 50.0), "olmo2": (0, 40, 3, 50.0),
          "gemma2": (0, 63, 159, 50.0), "gemma3": (3, 17, 42, 50.0)}
IDS = [1] + [int(i) for i in np.random.default_rng(7).integers(3, 512, 31)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Every family, its super weight planted, as a directory and an f32 GGUF file; llama3's
    twin with that weight zeroed (plant value 0: every other weight the same), and its BF16
    file."""
    root = tmp_path_factory.mktemp("test_models")
    made, jobs = {}, []
    for family in mtm.FAMILIES:
        for name, plant in [(family, PLANTS[family])] + (
                [("llama3_zeroed", PLANTS["llama3"][:3] + (0.0,))] if family == "llama3" else []):
            hf, gguf = str(root / name), str(root / f"{name}.gguf")
            config, weights = mtm.make(family, hf, plant=plant)
            made[name] = {"hf": hf, "gguf": gguf, "config": config, "weights": weights}
            jobs.append((hf, gguf, "f32"))
    made["llama3_bf16"] = dict(made["llama3"], gguf=str(root / "llama3.bf16.gguf"))
    jobs.append((made["llama3"]["hf"], made["llama3_bf16"]["gguf"], "bf16"))
    mtm.to_gguf_many(jobs)  # one converter process for all
    return made


def llama_cpp(*args):
    run = subprocess.run([BENCH_PY, EVAL] + [str(a) for a in args], capture_output=True, text=True)
    assert run.returncode == 0, f"llama_cpp_eval.py {args[0]} failed: {run.stderr[-3000:]}"
    return run.stdout


def llama_cpp_logits(path, ids, tmp_path, *flags):
    out = tmp_path / "logits.npy"
    llama_cpp("logits", path, ",".join(map(str, ids)), out, *flags)
    return np.load(out)


def read_gguf(path):
    sys.path.insert(0, os.path.join(ROOT, ".llama-cpp-convert", "gguf-py"))
    from gguf import GGUFReader
    return GGUFReader(path)


def test_configs_are_what_transformers_saves(models, tmp_path):
    """llama3's and gemma2's config.json are what LlamaConfig / Gemma2Config (4.46) write back
    (every key, the same values); the newer families' hold what llama.cpp's converter reads."""
    from transformers import AutoConfig
    for family in ("llama3", "gemma2"):
        config = AutoConfig.from_pretrained(models[family]["hf"])
        config.save_pretrained(tmp_path / family)
        with open(tmp_path / family / "config.json") as fh:
            saved = json.load(fh)
        saved.pop("_name_or_path")  # where it was read from
        assert saved == models[family]["config"], family
        assert set(saved) <= set(type(config)().to_dict()), family  # no key it does not know
    gemma3 = models["gemma3"]["config"]
    assert gemma3["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    assert gemma3["sliding_window_pattern"] == 6 and gemma3["attn_logit_softcapping"] is None
    assert models["qwen3"]["config"]["head_dim"] * 4 != mtm.HIDDEN
    assert "sliding_window" not in models["olmo2"]["config"]  # else the converter makes Olmo 3
    for family in mtm.FAMILIES:
        c = models[family]["config"]
        assert c["torch_dtype"] == "float32" and c["vocab_size"] == 512
        assert c["num_hidden_layers"] == mtm.DEFAULT_LAYERS[family]


def test_transformers_loads_every_tensor_and_agrees_with_the_numpy_forward(models, torch):
    """Where transformers 4.46 has the family: no tensor missing or left over, and its logits are
    the numpy forward pass's (which the newer families' llama.cpp checks rely on)."""
    from transformers import AutoModelForCausalLM
    for family in ("llama3", "gemma2"):
        m = models[family]
        model, info = AutoModelForCausalLM.from_pretrained(
            m["hf"], torch_dtype=torch.float32, attn_implementation="eager",
            output_loading_info=True)
        assert not any(info.values()), (family, info)
        with torch.no_grad():
            got = model.eval()(torch.tensor([IDS]), use_cache=False).logits[0].numpy()
        want = mtm.reference_forward(m["config"], m["weights"], IDS)[0]
        assert relative_error(got, want) < 1e-5, family


def test_tensor_names_and_shapes(models):
    names = set(models["qwen3"]["weights"])
    assert "lm_head.weight" in names and "model.layers.1.self_attn.q_norm.weight" in names
    assert models["qwen3"]["weights"]["model.layers.0.self_attn.q_proj.weight"].shape == (128, 64)
    olmo2 = models["olmo2"]["weights"]
    assert not any("input_layernorm" in n for n in olmo2)
    assert olmo2["model.layers.0.self_attn.q_norm.weight"].shape == (64,)
    assert olmo2["model.layers.0.self_attn.k_norm.weight"].shape == (32,)
    for family in ("gemma2", "gemma3"):
        w = models[family]["weights"]
        assert "lm_head.weight" not in w
        for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            # Gemma's (1 + w): stored near 0, and not all alike.
            assert abs(float(w[f"model.layers.0.{norm}.weight"].mean())) < 0.1, (family, norm)
    assert models["gemma3"]["weights"]["model.layers.5.self_attn.k_norm.weight"].shape == (16,)
    assert "lm_head.weight" not in models["llama3"]["weights"]
    assert models["llama3"]["weights"]["model.norm.weight"].std() > 0.05  # 1 + N(0, 0.1)
    for family in mtm.FAMILIES:
        for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer.model",
                  "tokenizer_config.json"):
            assert os.path.isfile(os.path.join(models[family]["hf"], f)), (family, f)


def test_gguf_files_as_llama_cpps_converter_writes_them(models):
    keys = {}
    for family in mtm.FAMILIES:
        r = read_gguf(models[family]["gguf"])
        keys[family] = {k: f.contents() for k, f in r.fields.items()
                        if not k.startswith("tokenizer.ggml.") or k.endswith("_id")}
        tensors = {t.name: t for t in r.tensors}
        # The converter adds 1 to the Gemmas' norm weights (llama.cpp multiplies by the stored
        # value); the other families' are copied.
        hf = models[family]["weights"]
        shift = 1.0 if family in ("gemma2", "gemma3") else 0.0
        assert np.allclose(np.asarray(tensors["output_norm.weight"].data),
                           hf["model.norm.weight"] + shift, rtol=0, atol=1e-6), family
        assert keys[family]["tokenizer.ggml.bos_token_id"] == 1
    # llama3's rope scaling is a tensor of frequency divisors, not keys.
    r = read_gguf(models["llama3"]["gguf"])
    freqs = {t.name: np.asarray(t.data) for t in r.tensors}["rope_freqs.weight"]
    want = 500000.0 ** (-np.arange(0, 16, 2) / 16) / mtm._inv_freq(models["llama3"]["config"], 0)
    assert np.allclose(freqs, want, rtol=1e-6)
    assert not any(k.startswith("llama.rope.scaling") for k in keys["llama3"])
    assert keys["gemma2"]["gemma2.attn_logit_softcapping"] == mtm.ATTN_SOFTCAP
    assert keys["gemma2"]["gemma2.attention.sliding_window"] == 8
    g3 = keys["gemma3"]
    assert g3["gemma3.rope.scaling.type"] == "linear" and g3["gemma3.rope.scaling.factor"] == 8.0
    assert g3["gemma3.rope.freq_base"] == 1e6 and g3["gemma3.rope.freq_base_swa"] == 1e4
    assert g3["gemma3.attention.sliding_window"] == 8
    assert "gemma3.attention.sliding_window_pattern" not in g3  # llama.cpp assumes 6
    assert keys["qwen3"]["qwen3.attention.key_length"] == 32


@pytest.mark.parametrize("family", mtm.FAMILIES)
def test_llama_cpp_runs_each_family_as_the_numpy_forward(models, family, tmp_path):
    """Every family's GGUF file in llama.cpp: finite logits, those of the tool's numpy forward
    pass (transformers' semantics) within what llama.cpp's arithmetic allows: 1e-5 with its f32
    KV cache where no GELU is involved, 1e-3 for the Gemmas (ggml's GELU is an f16 table)."""
    m = models[family]
    got = llama_cpp_logits(m["gguf"], IDS, tmp_path)
    assert got.shape == (len(IDS), 512) and np.all(np.isfinite(got))
    want = mtm.reference_forward(m["config"], m["weights"], IDS)[0]
    assert relative_error(got, want) < (1e-3 if family.startswith("gemma") else 1e-5)


def test_gemma2_llama_cpp_against_transformers(models, torch, tmp_path):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(
        models["gemma2"]["hf"], torch_dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        want = model(torch.tensor([IDS]), use_cache=False).logits[0].numpy()
    for kv in ("--kv=f32", "--kv=f16"):
        got = llama_cpp_logits(models["gemma2"]["gguf"], IDS, tmp_path, kv)
        assert relative_error(got, want) < 2e-3, kv


@pytest.mark.parametrize("family", mtm.FAMILIES)
def test_planted_super_weight_is_where_the_locator_looks(models, family):
    """Over a prompt that starts with BOS: the largest |down_proj input| of all layers at (L, C)
    and the largest |down_proj output| at (L, R), both at BOS, several times the next; with the
    weight zeroed the largest output is an ordinary one. The file holds V at [R, C]."""
    layer, row, col, value = PLANTS[family]
    m = models[family]
    _, down_in, down_out = mtm.reference_forward(m["config"], m["weights"], IDS)

    def argmax(acts):
        peaks = [float(np.abs(a).max()) for a in acts]
        li = int(np.argmax(peaks))
        token, channel = np.unravel_index(int(np.abs(acts[li]).argmax()), acts[li].shape)
        rest = max([p for i, p in enumerate(peaks) if i != li] +
                   [float(np.abs(np.delete(acts[li], channel, axis=1)).max())])
        return (li, int(token), int(channel)), peaks[li] / rest

    where, ratio = argmax(down_in)
    assert where == (layer, 0, col) and ratio > 1.5, (where, ratio)
    where, ratio = argmax(down_out)
    assert where == (layer, 0, row) and ratio > 10, (where, ratio)
    weights = dict(m["weights"])
    down = f"model.layers.{layer}.mlp.down_proj.weight"
    weights[down] = weights[down].copy()
    weights[down][row, col] = 0.0
    after = max(float(np.abs(a).max()) for a in mtm.reference_forward(m["config"], weights, IDS)[2])
    assert after < float(np.abs(down_out[layer]).max()) / 20
    tensors = {t.name: np.asarray(t.data) for t in read_gguf(m["gguf"]).tensors}
    assert tensors[f"blk.{layer}.ffn_down.weight"][row, col] == value


def test_zeroing_the_planted_weight_moves_llama_cpps_logits(models, tmp_path):
    planted = llama_cpp_logits(models["llama3"]["gguf"], IDS, tmp_path)
    zeroed = llama_cpp_logits(models["llama3_zeroed"]["gguf"], IDS, tmp_path)
    assert relative_error(zeroed[1:], planted[1:]) > 0.3  # every position, not only BOS's
    want = mtm.reference_forward(models["llama3_zeroed"]["config"],
                                 models["llama3_zeroed"]["weights"], IDS)[0]
    assert relative_error(zeroed, want) < 1e-5


def test_directory_and_gguf_tokenize_alike(models, tmp_path):
    """transformers' tokenizer of each directory and llama.cpp's of its GGUF file give the same
    ids (the Gemmas' with no space put before the text, in both)."""
    from transformers import AutoTokenizer
    with open(TINYSTORIES_TEXT, encoding="utf-8") as fh:
        text = fh.read()[:600]
    text_file = tmp_path / "text.txt"
    text_file.write_text(text, encoding="utf-8")
    ids = {}
    for family in mtm.FAMILIES:
        ids[family] = AutoTokenizer.from_pretrained(models[family]["hf"])(text).input_ids
        got = json.loads(llama_cpp("tokenize", models[family]["gguf"], text_file))["ids"]
        assert got == ids[family] and got[0] == 1, family
    assert ids["qwen3"] == ids["olmo2"] == ids["llama3"]
    assert ids["gemma2"] == ids["gemma3"] != ids["llama3"]  # "Spot" without the space before it


def test_perplexity_and_quantize_verbs(models, tmp_path):
    m = models["qwen3"]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(",".join(map(str, IDS)))
    got = json.loads(llama_cpp("perplexity", m["gguf"], ids_file))
    full = mtm.reference_forward(m["config"], m["weights"], IDS)[0]
    logp = full[:-1] - full[:-1].max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    want = float(np.exp(-logp[np.arange(len(IDS) - 1), IDS[1:]].mean()))
    assert got["tokens"] == len(IDS) - 1
    assert abs(got["perplexity"] / want - 1) < 1e-4, (got, want)

    q8 = tmp_path / "q8.gguf"
    llama_cpp("quantize", m["gguf"], q8, "Q8_0")
    types = {t.name: t.tensor_type.name for t in read_gguf(str(q8)).tensors}
    assert types["blk.0.ffn_down.weight"] == "Q8_0" and types["output_norm.weight"] == "F32"
    got = llama_cpp_logits(str(q8), IDS, tmp_path)
    # llama.cpp quantizes the activations to 8 bits as well: a few percent at these scales.
    assert np.all(np.isfinite(got)) and relative_error(got, full) < 0.15


def test_outtypes_and_missing_converter(models, tmp_path, monkeypatch):
    types = {t.name: t.tensor_type.name for t in read_gguf(models["llama3_bf16"]["gguf"]).tensors}
    assert types["blk.0.attn_q.weight"] == "BF16" and types["output_norm.weight"] == "F32"
    monkeypatch.setattr(mtm, "CONVERT_DIR", str(tmp_path / "absent"))
    with pytest.raises(RuntimeError, match="tools/setup-bench.sh"):
        mtm.to_gguf(models["llama3"]["hf"], str(tmp_path / "x.gguf"))
