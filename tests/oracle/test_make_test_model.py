"""tools/make_test_model.py, the random-weight test models of the model families, and
tools/llama_cpp_eval.py, llama.cpp's side: what the other oracle tests take from them. Each
family's directory has the config its transformers class saves and the tensors its modeling file
names; llama.cpp's converter makes a GGUF file of it that llama.cpp runs to the logits of the
tool's numpy forward pass (and, for the families transformers 4.46 has, to transformers'); a
planted super weight is where the paper's locator looks; in the mixtures of experts (Mixtral,
Qwen2-MoE, Qwen3-MoE, OLMoE), a planted super expert is where a locator that watches each
expert's routed tokens looks. No engine: tooling only."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, TINYSTORIES_TEXT, relative_error

sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_test_model as mtm  # noqa: E402

# No engine, no CPU-class dispatch: once, at full ISA; llama.cpp's build (make llama-cpp-test).
pytestmark = [pytest.mark.formats, pytest.mark.llama_cpp]

BENCH_PY = os.path.join(ROOT, ".venv-bench", "bin", "python")
EVAL = os.path.join(ROOT, "tools", "llama_cpp_eval.py")
# (layer, row, col, value); gemma3's in a sliding layer before its global one. The mixtures of
# experts': (layer, expert, row, col, value).
PLANTS = {"llama3": (0, 5, 7, 50.0), "qwen3": (0, 11, 100, 50.0), "olmo2": (0, 40, 3, 50.0),
          "gemma2": (0, 63, 159, 50.0), "gemma3": (3, 17, 42, 50.0),
          "mixtral": (0, 3, 5, 7, 50.0), "qwen2_moe": (1, 6, 60, 40, 50.0),
          "qwen3_moe": (0, 7, 33, 47, 50.0), "olmoe": (1, 2, 10, 20, -50.0)}
# What llama.cpp's converter writes for the mixtures of experts.
GGUF_ARCH = {"mixtral": "llama", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe",
             "olmoe": "olmoe"}
IDS = [1] + [int(i) for i in np.random.default_rng(7).integers(3, 512, 31)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Every family, its super weight (super expert) planted, as a directory and an f32 GGUF
    file; llama3's and qwen3_moe's twins with that weight zeroed (plant value 0: every other
    weight the same), and llama3's BF16 file."""
    root = tmp_path_factory.mktemp("test_models")
    made, jobs = {}, []
    for family in mtm.FAMILIES:
        zeroed = PLANTS[family][:-1] + (0.0,)
        for name, plant in [(family, PLANTS[family])] + (
                [(family + "_zeroed", zeroed)] if family in ("llama3", "qwen3_moe") else []):
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
    """The config.json of llama3, gemma2, mixtral, qwen2_moe and olmoe are what their config
    classes (4.46) write back (every key, the same values); the newer families' hold what
    llama.cpp's converter reads."""
    from transformers import AutoConfig
    for family in ("llama3", "gemma2", "mixtral", "qwen2_moe", "olmoe"):
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
    q3 = models["qwen3_moe"]["config"]
    assert q3["head_dim"] == 32 and q3["norm_topk_prob"] is True and q3["mlp_only_layers"] == []
    assert q3["decoder_sparse_step"] == 1 and q3["moe_intermediate_size"] == 48
    assert models["qwen2_moe"]["config"]["norm_topk_prob"] is False
    assert models["olmoe"]["config"]["norm_topk_prob"] is False
    assert "norm_topk_prob" not in models["mixtral"]["config"]  # always renormalized
    for family in mtm.MOE_FAMILIES:
        c = models[family]["config"]
        assert mtm.moe_dims(c) == (8, 2, 48, 80 if family == "qwen2_moe" else 0), family
        assert (c["bos_token_id"], c["eos_token_id"]) == (1, 2), family
    for family in mtm.FAMILIES:
        c = models[family]["config"]
        assert c["torch_dtype"] == "float32" and c["vocab_size"] == 512
        assert c["num_hidden_layers"] == mtm.DEFAULT_LAYERS[family]


def test_transformers_loads_every_tensor_and_agrees_with_the_numpy_forward(models, torch):
    """Where transformers 4.46 has the family: no tensor missing or left over, and its logits are
    the numpy forward pass's (which the newer families' llama.cpp checks rely on)."""
    from transformers import AutoModelForCausalLM
    for family in ("llama3", "gemma2", "mixtral", "qwen2_moe", "olmoe"):
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
    mixtral = models["mixtral"]["weights"]
    assert mixtral["model.layers.0.block_sparse_moe.gate.weight"].shape == (8, 64)
    assert mixtral["model.layers.1.block_sparse_moe.experts.7.w1.weight"].shape == (48, 64)
    assert mixtral["model.layers.1.block_sparse_moe.experts.7.w3.weight"].shape == (48, 64)
    assert mixtral["model.layers.1.block_sparse_moe.experts.7.w2.weight"].shape == (64, 48)
    qwen2 = models["qwen2_moe"]["weights"]
    assert qwen2["model.layers.0.self_attn.k_proj.bias"].shape == (32,)
    assert qwen2["model.layers.0.mlp.shared_expert.down_proj.weight"].shape == (64, 80)
    assert qwen2["model.layers.0.mlp.shared_expert_gate.weight"].shape == (1, 64)
    assert qwen2["model.layers.0.mlp.experts.0.down_proj.weight"].shape == (64, 48)
    assert models["qwen3_moe"]["weights"]["model.layers.0.self_attn.q_norm.weight"].shape == (32,)
    olmoe = models["olmoe"]["weights"]
    assert olmoe["model.layers.0.self_attn.q_norm.weight"].shape == (64,)
    assert olmoe["model.layers.0.self_attn.k_norm.weight"].shape == (64,)  # 4 KV heads
    assert "model.layers.0.input_layernorm.weight" in olmoe
    for family in mtm.MOE_FAMILIES:
        w = models[family]["weights"]
        assert not any(".mlp.down_proj" in n or ".mlp.gate_proj" in n for n in w), family
        assert sum(n.endswith("down_proj.weight") or n.endswith("w2.weight") for n in w) == \
            2 * (8 + (family == "qwen2_moe")), family
        assert "lm_head.weight" in w
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
    # The mixtures of experts: Mixtral as a llama with experts; the experts stacked, [E, rows,
    # cols] (ne reversed); expert widths where the converter writes them, no key for the
    # routing's renormalization (llama.cpp takes it from the architecture).
    for family in mtm.MOE_FAMILIES:
        arch = GGUF_ARCH[family]
        k = keys[family]
        assert k["general.architecture"] == arch, family
        assert k[f"{arch}.expert_count"] == 8 and k[f"{arch}.expert_used_count"] == 2, family
        assert not any("norm_topk" in key or "expert_weights_norm" in key for key in k), family
        tensors = {t.name: np.asarray(t.data) for t in read_gguf(models[family]["gguf"]).tensors}
        hf = models[family]["weights"]
        for what, kind in (("gate", "ffn_gate_exps"), ("up", "ffn_up_exps"),
                           ("down", "ffn_down_exps")):
            want = np.stack([hf[mtm.expert_names(models[family]["config"], 1, e)[what]]
                             for e in range(8)])
            assert np.array_equal(tensors[f"blk.1.{kind}.weight"], want), (family, kind)
        assert np.array_equal(tensors["blk.0.ffn_gate_inp.weight"],
                              hf[mtm.router_name(models[family]["config"], 0)]), family
    assert keys["mixtral"]["llama.feed_forward_length"] == 48
    assert "llama.expert_feed_forward_length" not in keys["mixtral"]
    q2 = keys["qwen2_moe"]
    assert q2["qwen2moe.expert_feed_forward_length"] == 48
    assert q2["qwen2moe.expert_shared_feed_forward_length"] == 80
    t = {t.name: t for t in read_gguf(models["qwen2_moe"]["gguf"]).tensors}
    assert t["blk.0.ffn_gate_inp_shexp.weight"].shape.tolist() == [64, 1]  # 2-D, as in HF
    assert t["blk.0.ffn_down_shexp.weight"].shape.tolist() == [80, 64]
    assert t["blk.0.attn_q.bias"].shape.tolist() == [64]
    assert keys["qwen3_moe"]["qwen3moe.expert_feed_forward_length"] == 48
    assert keys["qwen3_moe"]["qwen3moe.attention.key_length"] == 32
    assert "olmoe.expert_feed_forward_length" not in keys["olmoe"]
    assert keys["olmoe"]["olmoe.feed_forward_length"] == 48


@pytest.mark.parametrize("family", mtm.FAMILIES)
def test_llama_cpp_runs_each_family_as_the_numpy_forward(models, family, tmp_path):
    """Every family's GGUF file in llama.cpp: finite logits, those of the tool's numpy forward
    pass (transformers' semantics) within what llama.cpp's arithmetic allows: 1e-5 with its f32
    KV cache where no GELU is involved (the routing of the mixtures of experts included), 1e-3
    for the Gemmas (ggml's GELU is an f16 table)."""
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


@pytest.mark.parametrize("family", mtm.DENSE_FAMILIES)
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


@pytest.mark.parametrize("family", mtm.MOE_FAMILIES)
def test_planted_super_expert_is_where_the_locator_looks(models, family):
    """Over a prompt that starts with BOS, BOS is routed to the planted expert first; the largest
    |down_proj output| of any expert (before its routing weight) is the planted expert's, at
    (BOS, R), more than 10 times any other expert's (or the shared expert's) largest, its input's
    at (BOS, C); the per-expert maxima flag that expert alone (above their 99.5th percentile and
    0.1 of the largest). With the weight zeroed no expert stands out. The file holds V."""
    layer, expert, row, col, value = PLANTS[family]
    m = models[family]
    _, down_in, down_out, trace = mtm.reference_forward(m["config"], m["weights"], IDS,
                                                        experts=True)
    assert trace["routes"][layer][0, 0] == expert
    peaks = trace["down_out_max"]
    assert peaks.shape == (2, 8)
    assert np.unravel_index(int(peaks.argmax()), peaks.shape) == (layer, expert)
    out = np.abs(down_out[layer][expert])
    assert np.unravel_index(int(out.argmax()), out.shape) == (0, row)
    inp = np.abs(down_in[layer][expert])
    assert np.unravel_index(int(inp.argmax()), inp.shape) == (0, col)
    assert np.unravel_index(int(trace["down_in_max"].argmax()), peaks.shape) == (layer, expert)
    rival = np.delete(peaks.ravel(), int(peaks.argmax())).max()
    if trace["shared_out"] is not None:
        rival = max(rival, max(float(np.abs(a).max()) for a in trace["shared_out"]))
    assert peaks.max() > 10 * rival, (peaks.max(), rival)
    flagged = np.argwhere((peaks > np.percentile(peaks, 99.5)) & (peaks > 0.1 * peaks.max()))
    assert flagged.tolist() == [[layer, expert]]

    weights = dict(m["weights"])
    down = mtm.expert_names(m["config"], layer, expert)["down"]
    weights[down] = weights[down].copy()
    weights[down][row, col] = 0.0
    after = mtm.reference_forward(m["config"], weights, IDS, experts=True)[3]["down_out_max"]
    assert after.max() < peaks.max() / 20
    tensors = {t.name: np.asarray(t.data) for t in read_gguf(m["gguf"]).tensors}
    assert tensors[f"blk.{layer}.ffn_down_exps.weight"][expert, row, col] == value


def test_planting_wants_the_familys_kind(tmp_path):
    with pytest.raises(ValueError, match="expert"):
        mtm.make("mixtral", str(tmp_path / "m"), plant=(0, 1, 2, 3.0))
    with pytest.raises(ValueError, match="row"):
        mtm.make("llama3", str(tmp_path / "l"), plant=(0, 1, 2, 3, 4.0))
    with pytest.raises(ValueError, match="out of range"):
        mtm.make("olmoe", str(tmp_path / "o"), plant=(0, 8, 2, 3, 4.0))  # 8 experts: 0 to 7
    assert not os.listdir(tmp_path)
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_test_model.py"),
                          "qwen3_moe", str(tmp_path / "q"), "--plant", "0,1,2,3"],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "--plant_expert" in run.stderr


@pytest.mark.parametrize("family", ["llama3", "qwen3_moe"])
def test_zeroing_the_planted_weight_moves_llama_cpps_logits(models, family, tmp_path):
    planted = llama_cpp_logits(models[family]["gguf"], IDS, tmp_path)
    zeroed = llama_cpp_logits(models[family + "_zeroed"]["gguf"], IDS, tmp_path)
    assert relative_error(zeroed[1:], planted[1:]) > 0.3  # every position, not only BOS's
    want = mtm.reference_forward(models[family + "_zeroed"]["config"],
                                 models[family + "_zeroed"]["weights"], IDS)[0]
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
    assert all(ids[f] == ids["llama3"] for f in mtm.MOE_FAMILIES)
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
