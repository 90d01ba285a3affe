#!/usr/bin/env python3
"""Small random-weight test models of the model families, as Hugging Face directories and (through
llama.cpp's own converter) GGUF files, for the oracle tests.

  make_test_model.py FAMILY OUT_DIR [--gguf OUT.gguf] [--outtype f32|f16|bf16]
                     [--plant LAYER,ROW,COL,VALUE] [--seed N] [--layers N]

FAMILY is one of llama3, qwen3, olmo2, gemma2, gemma3. OUT_DIR gets config.json (the fields the
family's transformers config class saves, sorted as save_pretrained writes them), model.safetensors
(float32, tensor names as the family's transformers modeling file has them) and the tokenizer
files of testdata/stories260K/tok512.model (512 tokens; <unk> 0, <s> 1, </s> 2), written as
tools/convert_llama2c_to_hf.py writes them (for the Gemmas without the space it puts before the
text, as Gemma's tokenizers and llama.cpp's converter for them have it). The weights are
numpy's, not transformers' model classes (qwen3, olmo2 and gemma3_text are newer than the
transformers 4.46 here): matrices N(0, 0.2), RMSNorm weights 1 + N(0, 0.1), or N(0, 0.1) where
the family applies (1 + w) (Gemma), so that a loader that skips a norm or gets its convention
wrong is seen.

Shapes: hidden 64, intermediate 160, 4 heads, 2 KV heads, 128 positions, 2 layers (gemma3: 6, so
that its 5:1 sliding/global pattern has a global layer, the last). Gemma 2's attention softcap is
10, not its real 50, which at these scores would move the logits by only 0.2%.

--plant L,R,C,V plants a super weight: model.layers.L.mlp.down_proj.weight[R, C] = V, and makes
that down_proj's input channel C fire on the BOS token (<s>, id 1) at position 0: rows C of
gate_proj and up_proj are set along the MLP's input there (a forward pass of the intact model,
reference_forward, gives it), scaled so that down_proj's input at (BOS, C) is PLANT_MARGIN (3)
times the largest |down_proj input| of the intact model over a calibration prompt; the rest of
column C of down_proj is divided by PLANT_MARGIN. Over a prompt that starts with BOS, the largest
|down_proj input| of all layers is then at (L, C), token 0, and the largest |down_proj output| at
(L, R), token 0 (about V * 60, V * 200 in Olmo 2), as the paper's locator reads them; zeroed, the
largest output is an ordinary one again (about 20; 50 to 75 in Olmo 2, in every layer alike).
Channel C fires less on the other tokens too, so zeroing V changes every position's logits.

--gguf runs llama.cpp's convert_hf_to_gguf.py (tools/setup-bench.sh keeps it, from the same
llama-cpp-python sdist as .venv-bench's llama.cpp, at .llama-cpp-convert) on OUT_DIR, with this
environment's torch (1.13: the attributes it lacks that the converter touches are stubbed first).
One change to the converter's behaviour: its Olmo2 class writes byte-level BPE vocabularies only
(OLMo 2's own tokenizer is one), so for a directory with tokenizer.model it writes the
SentencePiece vocabulary, as its Llama class would; weights and hyperparameters are its own.

reference_forward(config, weights, ids) is a plain numpy forward pass of each family as its
transformers modeling file computes it (float64): the logits, and every layer's down_proj input and
output. Importable: make(), to_gguf(), to_gguf_many(), load(), reference_forward(),
plant_super_weight().
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TOKENIZER_MODEL = os.path.join(ROOT, "testdata", "stories260K", "tok512.model")
CONVERT_DIR = os.path.join(ROOT, ".llama-cpp-convert")

FAMILIES = ("llama3", "qwen3", "olmo2", "gemma2", "gemma3")
DEFAULT_LAYERS = {"llama3": 2, "qwen3": 2, "olmo2": 2, "gemma2": 2, "gemma3": 6}
HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, VOCAB, POSITIONS = 64, 160, 4, 2, 512, 128
BOS, EOS = 1, 2
MATRIX_STD, NORM_STD = 0.2, 0.1
# Gemma 2's own cap is 50; at these weights' attention scores (a few units) it moves the logits
# by 0.2%, within what llama.cpp's f16 KV cache does; at 10 by about 5%, so a loader that skips
# it is seen. (The final cap, 30, moves them by about 4% as it is.)
ATTN_SOFTCAP = 10.0
# The planted super activation, the down_proj input at (BOS, COL), is PLANT_MARGIN times the
# largest |down_proj input| of the intact model over CALIBRATION_IDS (about 20 in most families
# here, 50 to 80 in Olmo 2, whose MLP reads the residual stream unnormalized).
PLANT_MARGIN = 3.0
CALIBRATION_IDS = [BOS] + [3 + (37 * i) % (VOCAB - 3) for i in range(63)]


def _llama3_config(layers):
    # LlamaConfig (transformers 4.46.3) as save_pretrained writes it.
    return {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": BOS, "eos_token_id": EOS, "head_dim": HIDDEN // HEADS,
        "hidden_act": "silu", "hidden_size": HIDDEN, "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE, "max_position_embeddings": POSITIONS,
        "mlp_bias": False, "model_type": "llama", "num_attention_heads": HEADS,
        "num_hidden_layers": layers, "num_key_value_heads": KV_HEADS, "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        # Llama 3.1's scaling with a small original context, so that it matters within 128
        # positions: of the 8 frequencies, the first is smoothed and the other 7 divided by 8.
        "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 16, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "float32",
        "transformers_version": "4.46.3", "use_cache": True, "vocab_size": VOCAB,
    }


def _qwen3_config(layers):
    # Qwen3Config as transformers 4.51 (its first) saves it; llama.cpp's converter reads the
    # common keys (Qwen3Model < Qwen2Model < TextModel) and head_dim.
    return {
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": BOS, "eos_token_id": EOS, "head_dim": 32, "hidden_act": "silu",
        "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": POSITIONS, "max_window_layers": 28, "model_type": "qwen3",
        "num_attention_heads": HEADS, "num_hidden_layers": layers,
        "num_key_value_heads": KV_HEADS, "rms_norm_eps": 1e-06, "rope_scaling": None,
        "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "float32", "transformers_version": "4.51.0", "use_cache": True,
        "use_sliding_window": False, "vocab_size": VOCAB,
    }


def _olmo2_config(layers):
    # Olmo2Config as transformers 4.47 (its first) saves it (no head_dim: hidden / heads). No
    # sliding_window key: the converter would take the model for Olmo 3 (sliding layers).
    return {
        "architectures": ["Olmo2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": BOS, "eos_token_id": EOS, "hidden_act": "silu", "hidden_size": HIDDEN,
        "initializer_range": 0.02, "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": POSITIONS, "model_type": "olmo2",
        "num_attention_heads": HEADS, "num_hidden_layers": layers,
        "num_key_value_heads": KV_HEADS, "pad_token_id": None, "rms_norm_eps": 1e-05,
        "rope_scaling": None, "rope_theta": 500000.0, "tie_word_embeddings": False,
        "torch_dtype": "float32", "transformers_version": "4.47.0", "use_cache": True,
        "vocab_size": VOCAB,
    }


def _gemma2_config(layers):
    # Gemma2Config (transformers 4.46.3) as save_pretrained writes it. Even layers slide.
    # attn_logit_softcapping is ATTN_SOFTCAP, not Gemma 2's 50.
    return {
        "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "attn_logit_softcapping": ATTN_SOFTCAP, "bos_token_id": BOS,
        "cache_implementation": "hybrid", "eos_token_id": EOS, "final_logit_softcapping": 30.0,
        "head_dim": 16,
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": HIDDEN,
        "initializer_range": 0.02, "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": POSITIONS, "model_type": "gemma2",
        "num_attention_heads": HEADS, "num_hidden_layers": layers,
        "num_key_value_heads": KV_HEADS, "pad_token_id": 0, "query_pre_attn_scalar": 16,
        "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 8,
        "torch_dtype": "float32", "transformers_version": "4.46.3", "use_cache": True,
        "vocab_size": VOCAB,
    }


def _gemma3_config(layers):
    # Gemma3TextConfig as transformers 4.53-4.56 save it: layer_types (every 6th layer global)
    # and the older sliding_window_pattern (which they keep as _sliding_window_pattern, and as
    # given), rope_scaling for the global layers only (local: rope_local_base_freq, unscaled).
    # llama.cpp's converter reads sliding_window, rope_local_base_freq, rope_theta, rope_scaling,
    # final_logit_softcapping (asserts attn_logit_softcapping is null); llama.cpp itself takes
    # the pattern 6 as given for gemma3 (no key in the file).
    return {
        "_sliding_window_pattern": 6,
        "architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "attn_logit_softcapping": None, "bos_token_id": BOS, "eos_token_id": EOS,
        "final_logit_softcapping": None, "head_dim": 16,
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": HIDDEN,
        "initializer_range": 0.02, "intermediate_size": INTERMEDIATE,
        "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                        for i in range(layers)],
        "max_position_embeddings": POSITIONS, "model_type": "gemma3_text",
        "num_attention_heads": HEADS, "num_hidden_layers": layers,
        "num_key_value_heads": KV_HEADS, "pad_token_id": 0, "query_pre_attn_scalar": 16,
        "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "rope_theta": 1000000.0,
        "sliding_window": 8, "sliding_window_pattern": 6, "torch_dtype": "float32",
        "transformers_version": "4.55.0", "use_bidirectional_attention": False,
        "use_cache": True, "vocab_size": VOCAB,
    }


_CONFIGS = {"llama3": _llama3_config, "qwen3": _qwen3_config, "olmo2": _olmo2_config,
            "gemma2": _gemma2_config, "gemma3": _gemma3_config}


def config_for(family, layers=None):
    if family not in _CONFIGS:
        raise ValueError(f"unknown family {family!r}: one of {', '.join(FAMILIES)}")
    layers = DEFAULT_LAYERS[family] if layers is None else layers
    if layers < 1 or (family == "gemma2" and layers < 2):
        raise ValueError(f"{family} needs at least {2 if family == 'gemma2' else 1} layers")
    return _CONFIGS[family](layers)


def family_of(config):
    return {"llama": "llama3", "qwen3": "qwen3", "olmo2": "olmo2", "gemma2": "gemma2",
            "gemma3_text": "gemma3"}[config["model_type"]]


def _dims(config):
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return heads, kv, head_dim


def _tied(config):
    # PretrainedConfig's default, which save_pretrained leaves out (Gemma's configs).
    return config.get("tie_word_embeddings", True)


def tensor_shapes(config):
    """Name -> shape of every tensor, in the order they are drawn (and stored)."""
    family = family_of(config)
    d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv, hd = _dims(config)
    shapes = {"model.embed_tokens.weight": (v, d)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        if family != "olmo2":
            shapes[p + "input_layernorm.weight"] = (d,)
        shapes[p + "self_attn.q_proj.weight"] = (heads * hd, d)
        shapes[p + "self_attn.k_proj.weight"] = (kv * hd, d)
        shapes[p + "self_attn.v_proj.weight"] = (kv * hd, d)
        shapes[p + "self_attn.o_proj.weight"] = (d, heads * hd)
        if family in ("qwen3", "gemma3"):
            shapes[p + "self_attn.q_norm.weight"] = (hd,)
            shapes[p + "self_attn.k_norm.weight"] = (hd,)
        elif family == "olmo2":
            shapes[p + "self_attn.q_norm.weight"] = (heads * hd,)
            shapes[p + "self_attn.k_norm.weight"] = (kv * hd,)
        shapes[p + "post_attention_layernorm.weight"] = (d,)
        if family in ("gemma2", "gemma3"):
            shapes[p + "pre_feedforward_layernorm.weight"] = (d,)
        if family in ("olmo2", "gemma2", "gemma3"):
            shapes[p + "post_feedforward_layernorm.weight"] = (d,)
        shapes[p + "mlp.gate_proj.weight"] = (f, d)
        shapes[p + "mlp.up_proj.weight"] = (f, d)
        shapes[p + "mlp.down_proj.weight"] = (d, f)
    shapes["model.norm.weight"] = (d,)
    if not _tied(config):
        shapes["lm_head.weight"] = (v, d)
    return shapes


def random_weights(config, seed=0):
    rng = np.random.default_rng(seed)
    gemma = family_of(config) in ("gemma2", "gemma3")
    weights = {}
    for name, shape in tensor_shapes(config).items():
        if len(shape) == 2:
            w = rng.normal(0.0, MATRIX_STD, shape)
        else:  # an RMSNorm's weight
            w = rng.normal(0.0, NORM_STD, shape) + (0.0 if gemma else 1.0)
        weights[name] = w.astype(np.float32)
    return weights


# --- the reference forward pass -------------------------------------------------------------


def _rms_norm(x, w, eps, gemma):
    x = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return x * ((1.0 + w) if gemma else w)


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _inv_freq(config, layer):
    """The rotary inverse frequencies of a layer, as transformers' rope initializers give them."""
    family = family_of(config)
    _, _, hd = _dims(config)
    base = config["rope_theta"]
    scaling = config.get("rope_scaling")
    if family == "gemma3" and config["layer_types"][layer] == "sliding_attention":
        base, scaling = config["rope_local_base_freq"], None
    inv = 1.0 / base ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    if not scaling:
        return inv
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        return inv / scaling["factor"]
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) & ~(wavelen > old / low)
        return np.where(medium, smoothed, scaled)
    raise ValueError(f"rope type {kind!r} not modelled")


def _rope(x, inv_freq):
    """Rotate-half RoPE (transformers' layout) of x [heads, tokens, head_dim]."""
    t = x.shape[1]
    angles = np.arange(t, dtype=np.float64)[:, None] * inv_freq[None, :]
    cos = np.concatenate([np.cos(angles)] * 2, axis=-1)
    sin = np.concatenate([np.sin(angles)] * 2, axis=-1)
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def _sliding(config, layer):
    family = family_of(config)
    if family == "gemma2":
        return layer % 2 == 0
    if family == "gemma3":
        return config["layer_types"][layer] == "sliding_attention"
    return False


def reference_forward(config, weights, ids, stop_at_mlp_input=None):
    """The family's forward pass over one sequence, in float64, as its transformers modeling file
    computes it. Returns (logits [tokens, vocab], down_in [layers][tokens, intermediate],
    down_out [layers][tokens, hidden]). With stop_at_mlp_input=L it returns that layer's MLP
    input (after its norm) [tokens, hidden] instead."""
    family = family_of(config)
    gemma = family in ("gemma2", "gemma3")
    heads, kv, hd = _dims(config)
    eps = config["rms_norm_eps"]
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    ids = np.asarray(ids)
    t = len(ids)
    h = w["model.embed_tokens.weight"][ids]
    if gemma:
        h = h * np.float64(np.float32(config["hidden_size"] ** 0.5))
    scale = (config["query_pre_attn_scalar"] if gemma else hd) ** -0.5
    softcap = config.get("attn_logit_softcapping")
    act = _gelu_tanh if gemma else _silu
    pos = np.arange(t)
    causal = pos[None, :] <= pos[:, None]
    down_in, down_out = [], []

    def norm(x, name):
        return _rms_norm(x, w[name], eps, gemma)

    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = h if family == "olmo2" else norm(h, p + "input_layernorm.weight")
        q = x @ w[p + "self_attn.q_proj.weight"].T
        k = x @ w[p + "self_attn.k_proj.weight"].T
        v = x @ w[p + "self_attn.v_proj.weight"].T
        if family == "olmo2":  # over the whole projection, before the heads are split
            q = norm(q, p + "self_attn.q_norm.weight")
            k = norm(k, p + "self_attn.k_norm.weight")
        q = q.reshape(t, heads, hd).transpose(1, 0, 2)
        k = k.reshape(t, kv, hd).transpose(1, 0, 2)
        v = v.reshape(t, kv, hd).transpose(1, 0, 2)
        if family in ("qwen3", "gemma3"):  # per head
            q = norm(q, p + "self_attn.q_norm.weight")
            k = norm(k, p + "self_attn.k_norm.weight")
        inv = _inv_freq(config, i)
        q, k = _rope(q, inv), _rope(k, inv)
        group = heads // kv
        k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
        scores = q @ k.transpose(0, 2, 1) * scale
        if softcap:
            scores = np.tanh(scores / softcap) * softcap
        mask = causal
        if _sliding(config, i):
            mask = mask & (pos[:, None] - pos[None, :] < config["sliding_window"])
        scores = np.where(mask[None], scores, -np.inf)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = scores / scores.sum(axis=-1, keepdims=True)
        attn = (probs @ v).transpose(1, 0, 2).reshape(t, heads * hd)
        attn = attn @ w[p + "self_attn.o_proj.weight"].T
        if family == "olmo2" or gemma:
            attn = norm(attn, p + "post_attention_layernorm.weight")
        h = h + attn
        if family == "olmo2":
            x = h
        elif gemma:
            x = norm(h, p + "pre_feedforward_layernorm.weight")
        else:
            x = norm(h, p + "post_attention_layernorm.weight")
        if stop_at_mlp_input == i:
            return x
        inner = act(x @ w[p + "mlp.gate_proj.weight"].T) * (x @ w[p + "mlp.up_proj.weight"].T)
        out = inner @ w[p + "mlp.down_proj.weight"].T
        down_in.append(inner)
        down_out.append(out)
        if family == "olmo2" or gemma:
            out = norm(out, p + "post_feedforward_layernorm.weight")
        h = h + out
    h = norm(h, "model.norm.weight")
    head = w["model.embed_tokens.weight" if _tied(config) else "lm_head.weight"]
    logits = h @ head.T
    if config.get("final_logit_softcapping"):
        cap = config["final_logit_softcapping"]
        logits = np.tanh(logits / cap) * cap
    return logits, down_in, down_out


def plant_super_weight(config, weights, layer, row, col, value):
    """Plants a super weight in place (see the module's docstring); returns the down_proj input
    it makes at (BOS, col)."""
    d, f = config["hidden_size"], config["intermediate_size"]
    if not (0 <= layer < config["num_hidden_layers"] and 0 <= row < d and 0 <= col < f):
        raise ValueError(f"--plant {layer},{row},{col}: out of range (layers "
                         f"{config['num_hidden_layers']}, rows {d}, columns {f})")
    natural = max(float(np.abs(a).max())
                  for a in reference_forward(config, weights, CALIBRATION_IDS)[1])
    target = PLANT_MARGIN * natural
    x = reference_forward(config, weights, [BOS], stop_at_mlp_input=layer)[0]
    # Rows along x with gate = up = g at BOS, g solving act(g) * g = target (g is about
    # sqrt(target): act(g) is g within 0.5% there).
    act = _gelu_tanh if family_of(config) in ("gemma2", "gemma3") else _silu
    g = math.sqrt(target)
    for _ in range(3):
        g *= math.sqrt(target / (act(g) * g))
    along = g * x / float(x @ x)
    p = f"model.layers.{layer}.mlp."
    weights[p + "gate_proj.weight"][col] = along.astype(np.float32)
    weights[p + "up_proj.weight"][col] = along.astype(np.float32)
    # The rest of column col scaled down as much as its input was scaled up: with the super
    # weight zeroed, that channel adds to the outputs no more than an ordinary one does (and
    # raises no second spike for an iterating locator).
    down = weights[p + "down_proj.weight"]
    others = np.arange(d) != row
    down[others, col] = (down[others, col] / PLANT_MARGIN).astype(np.float32)
    down[row, col] = np.float32(value)
    return float(act(g) * g)


# --- the Hugging Face directory -------------------------------------------------------------

_tokenizer_files = {}


def _tokenizer_files_bytes(add_prefix_space):
    """The tokenizer files LlamaTokenizerFast writes for tok512.model (made once a process)."""
    if add_prefix_space not in _tokenizer_files:
        import tempfile
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from transformers import LlamaTokenizerFast
        tok = LlamaTokenizerFast(vocab_file=TOKENIZER_MODEL, legacy=False, from_slow=True,
                                 add_prefix_space=add_prefix_space, add_bos_token=True)
        files = {}
        with tempfile.TemporaryDirectory() as tmp:
            tok.save_pretrained(tmp)
            for name in sorted(os.listdir(tmp)):
                with open(os.path.join(tmp, name), "rb") as fh:
                    files[name] = fh.read()
        _tokenizer_files[add_prefix_space] = files
    return _tokenizer_files[add_prefix_space]


def write_hf(out_dir, config, weights):
    from safetensors.numpy import save_file
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as fh:
        fh.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()},
              os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    # Gemma's tokenizers add no space before the text (llama.cpp's converter writes
    # add_space_prefix false for them whatever the directory says): the same here, so that
    # the directory and its GGUF file tokenize text alike.
    gemma = family_of(config) in ("gemma2", "gemma3")
    for name, data in _tokenizer_files_bytes(not gemma).items():
        with open(os.path.join(out_dir, name), "wb") as fh:
            fh.write(data)


def load(hf_dir):
    """(config, weights) of a directory make() wrote."""
    from safetensors.numpy import load_file
    with open(os.path.join(hf_dir, "config.json")) as fh:
        config = json.load(fh)
    return config, load_file(os.path.join(hf_dir, "model.safetensors"))


def make(family, out_dir, plant=None, seed=0, layers=None, gguf=None, outtype="f32"):
    """Writes the family's model to out_dir (and its GGUF to `gguf`, if given); returns
    (config, weights). plant: (layer, row, col, value) or None."""
    config = config_for(family, layers)
    weights = random_weights(config, seed)
    if plant is not None:
        plant_super_weight(config, weights, *plant)
    write_hf(out_dir, config, weights)
    if gguf:
        to_gguf(out_dir, gguf, outtype)
    return config, weights


# --- llama.cpp's converter ------------------------------------------------------------------

# Runs convert_hf_to_gguf.py once per job (argv lists) in this process. torch 1.13 lacks dtypes
# that the converter names at import or in its dtype tables; distinct placeholders serve, as no
# tensor here has those types. Olmo2's converter knows only byte-level BPE tokenizers (OLMo 2's
# own): given tokenizer.model, as here, it writes the SentencePiece vocabulary as Llama's does
# (the tokenizer the directory has; the weights and hyperparameters are converted unchanged).
_CONVERT_SHIM = r"""
import json, runpy, sys
import torch
for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "uint16",
             "uint32", "uint64"):
    if not hasattr(torch, name):
        setattr(torch, name, type("missing_torch_" + name, (), {})())
import conversion.olmo
from conversion import TextModel
def set_vocab_sentencepiece_first(self):
    if (self.dir_model / "tokenizer.model").is_file():
        self._set_vocab_sentencepiece()
    else:
        TextModel.set_vocab(self)
conversion.olmo.Olmo2Model.set_vocab = set_vocab_sentencepiece_first
script = sys.argv[1]
for argv in json.loads(sys.argv[2]):
    sys.argv = [script] + argv
    runpy.run_path(script, run_name="__main__")
"""


def _convert_dir():
    script = os.path.join(CONVERT_DIR, "convert_hf_to_gguf.py")
    if not os.path.isfile(script):
        raise RuntimeError(f"llama.cpp's converter is missing ({CONVERT_DIR}): run "
                           "tools/setup-bench.sh")
    return os.path.realpath(CONVERT_DIR)


def to_gguf_many(jobs):
    """Converts [(hf_dir, out_path, outtype)] with llama.cpp's converter, in one process."""
    jobs = list(jobs)
    if not jobs:
        return
    convert = _convert_dir()
    for _, _, outtype in jobs:
        if outtype not in ("f32", "f16", "bf16"):
            raise ValueError(f"outtype {outtype!r}: one of f32, f16, bf16")
    argvs = [[str(hf), "--outtype", outtype, "--outfile", str(out)] for hf, out, outtype in jobs]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.join(convert, "gguf-py"), convert] +
        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    run = subprocess.run([sys.executable, "-c", _CONVERT_SHIM,
                          os.path.join(convert, "convert_hf_to_gguf.py"), json.dumps(argvs)],
                         env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed on {[j[0] for j in jobs]}:\n"
                           f"{run.stderr[-4000:]}")


def to_gguf(hf_dir, out_path, outtype="f32"):
    to_gguf_many([(hf_dir, out_path, outtype)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("out_dir")
    parser.add_argument("--gguf", help="also write llama.cpp's conversion here")
    parser.add_argument("--outtype", default="f32", choices=["f32", "f16", "bf16"])
    parser.add_argument("--plant", help="LAYER,ROW,COL,VALUE: plant a super weight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int)
    args = parser.parse_args()
    planted = None
    if args.plant:
        parts = args.plant.split(",")
        if len(parts) != 4:
            parser.error("--plant takes LAYER,ROW,COL,VALUE")
        planted = (int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3]))
    try:
        make(args.family, args.out_dir, plant=planted, seed=args.seed, layers=args.layers,
             gguf=args.gguf, outtype=args.outtype)
    except (ValueError, RuntimeError) as e:
        sys.exit(f"make_test_model: {e}")


if __name__ == "__main__":
    main()
