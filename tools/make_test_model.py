#!/usr/bin/env python3
"""Small random-weight test models of the model families, as Hugging Face directories and (through
llama.cpp's own converter) GGUF files, for the oracle tests.

  make_test_model.py FAMILY OUT_DIR [--gguf OUT.gguf] [--outtype f32|f16|bf16]
                     [--plant LAYER,ROW,COL,VALUE | --plant_expert LAYER,EXPERT,ROW,COL,VALUE]
                     [--seed N] [--layers N]

FAMILY is one of llama3, qwen3, olmo2, gemma2, gemma3 and the mixtures of experts mixtral,
qwen2_moe, qwen3_moe, olmoe. OUT_DIR gets config.json (the fields the family's transformers
config class saves, sorted as save_pretrained writes them), model.safetensors (float32, tensor
names as the family's transformers modeling file has them) and the tokenizer
files of testdata/stories260K/tok512.model (512 tokens; <unk> 0, <s> 1, </s> 2), written as
tools/convert_llama2c_to_hf.py writes them (for the Gemmas without the space it puts before the
text, as Gemma's tokenizers and llama.cpp's converter for them have it). The weights are
numpy's, not transformers' model classes (qwen3, olmo2, gemma3_text and qwen3_moe are newer
than the transformers 4.46 here): matrices and biases N(0, 0.2), RMSNorm weights 1 + N(0, 0.1),
or N(0, 0.1) where the family applies (1 + w) (Gemma), so that a loader that skips a norm or gets
its convention wrong is seen.

Shapes: hidden 64, intermediate 160, 4 heads, 2 KV heads, 128 positions, 2 layers (gemma3: 6, so
that its 5:1 sliding/global pattern has a global layer, the last). Gemma 2's attention softcap is
10, not its real 50, which at these scores would move the logits by only 0.2%.

The mixtures of experts: every layer sparse, 8 experts, 2 per token, each expert 48 wide.
mixtral: Llama's attention, block_sparse_moe.gate and experts.E.w1 (gate) / w3 (up) / w2 (down),
the chosen weights always renormalized. qwen2_moe: q/k/v biases, mlp.gate, mlp.experts.E.*, and
a shared expert (80 wide) on every token, scaled by sigmoid(x . shared_expert_gate); not
renormalized. qwen3_moe: Qwen3's attention (head_dim 32, per-head q/k norms), renormalized.
olmoe: q/k norms over the whole projections, not renormalized, and 4 KV heads (llama.cpp's OLMoE
takes k_norm to be hidden wide, as OLMoE-1B-7B's is). The router as transformers': softmax of
the logits over all experts, the top k (ties: the lower index), their weights renormalized where
the family does, the experts' outputs weighted and summed.

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

--plant_expert L,E,R,C,V (the mixtures of experts) plants a super expert the same way inside
expert E of layer L: its down projection's weight[R, C] = V, its gate and up rows C along BOS's
MLP input (PLANT_MARGIN times the largest |down_proj input| of any expert, or shared expert, of
the intact model over the calibration prompt), the rest of its down column C divided by
PLANT_MARGIN; and router row E raised along BOS's MLP input until BOS's logit for E is
ROUTER_MARGIN (4) above every other expert's, so that BOS goes to E first (weight about 0.95;
tokens whose MLP input lies along BOS's go to E more often too). Over a prompt that starts with
BOS, the largest |down_proj output| of any expert before its routing weight is then at (L, E,
token 0, row R), about 200 times the next expert's largest (its input's at column C, about 3
times), so that a locator that watches each expert's routed tokens finds (L, E, R, C) and the
per-expert maxima single out E; zeroed, the largest is an ordinary one again.

--gguf runs llama.cpp's convert_hf_to_gguf.py (tools/setup-bench.sh keeps it, from the same
llama-cpp-python sdist as .venv-bench's llama.cpp, at .llama-cpp-convert) on OUT_DIR, with this
environment's torch (1.13: the attributes it lacks that the converter touches are stubbed first).
One change to the converter's behaviour: its Olmo2, OLMoE and Qwen2-MoE (so Qwen3-MoE) classes
write byte-level BPE vocabularies only (their models' own tokenizers are), so for a directory
with tokenizer.model they write the SentencePiece vocabulary, as its Llama class (Mixtral's)
does; weights and hyperparameters are its own.

reference_forward(config, weights, ids) is a plain numpy forward pass of each family as its
transformers modeling file computes it (float64): the logits, and every layer's down_proj input and
output (every expert's, with experts=True their maxima and the routes). Importable: make(),
to_gguf(), to_gguf_many(), load(), reference_forward(), plant_super_weight(),
plant_super_expert().
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

DENSE_FAMILIES = ("llama3", "qwen3", "olmo2", "gemma2", "gemma3")
MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")
FAMILIES = DENSE_FAMILIES + MOE_FAMILIES
DEFAULT_LAYERS = {"llama3": 2, "qwen3": 2, "olmo2": 2, "gemma2": 2, "gemma3": 6, "mixtral": 2,
                  "qwen2_moe": 2, "qwen3_moe": 2, "olmoe": 2}
HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, VOCAB, POSITIONS = 64, 160, 4, 2, 512, 128
# The mixtures of experts: 8 experts, 2 per token, each expert's MLP 48 wide (Qwen2-MoE's shared
# expert 80).
EXPERTS, EXPERTS_PER_TOKEN, EXPERT_INTERMEDIATE, SHARED_INTERMEDIATE = 8, 2, 48, 80
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
# A planted super expert's router logit at BOS, this much above every other expert's: the
# expert is BOS's first choice, its softmax weight at least about 0.9 of the top k's.
ROUTER_MARGIN = 4.0
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


def _mixtral_config(layers):
    # MixtralConfig (transformers 4.46.3) as save_pretrained writes it: intermediate_size is each
    # expert's; no head_dim (hidden / heads); every router renormalizes its top k.
    return {
        "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": BOS,
        "eos_token_id": EOS, "hidden_act": "silu", "hidden_size": HIDDEN,
        "initializer_range": 0.02, "intermediate_size": EXPERT_INTERMEDIATE,
        "max_position_embeddings": POSITIONS, "model_type": "mixtral",
        "num_attention_heads": HEADS, "num_experts_per_tok": EXPERTS_PER_TOKEN,
        "num_hidden_layers": layers, "num_key_value_heads": KV_HEADS,
        "num_local_experts": EXPERTS, "output_router_logits": False, "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001, "router_jitter_noise": 0.0,
        "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "float32",
        "transformers_version": "4.46.3", "use_cache": True, "vocab_size": VOCAB,
    }


def _qwen2_moe_config(layers):
    # Qwen2MoeConfig (transformers 4.46.3) as save_pretrained writes it. intermediate_size (dense
    # layers', none here) is the shared expert's, as in Qwen1.5-MoE; q/k/v have biases.
    return {
        "architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0, "bos_token_id": BOS,
        "decoder_sparse_step": 1, "eos_token_id": EOS, "hidden_act": "silu",
        "hidden_size": HIDDEN, "initializer_range": 0.02,
        "intermediate_size": SHARED_INTERMEDIATE, "max_position_embeddings": POSITIONS,
        "max_window_layers": 28, "mlp_only_layers": [], "model_type": "qwen2_moe",
        "moe_intermediate_size": EXPERT_INTERMEDIATE, "norm_topk_prob": False,
        "num_attention_heads": HEADS, "num_experts": EXPERTS,
        "num_experts_per_tok": EXPERTS_PER_TOKEN, "num_hidden_layers": layers,
        "num_key_value_heads": KV_HEADS, "output_router_logits": False, "rms_norm_eps": 1e-06,
        "rope_scaling": None, "rope_theta": 10000.0, "router_aux_loss_coef": 0.001,
        "shared_expert_intermediate_size": SHARED_INTERMEDIATE, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": "float32",
        "transformers_version": "4.46.3", "use_cache": True, "use_sliding_window": False,
        "vocab_size": VOCAB,
    }


def _qwen3_moe_config(layers):
    # Qwen3MoeConfig as transformers 4.51 (its first) saves it, the keys of Qwen3-30B-A3B's
    # config.json: Qwen3's attention (head_dim 32, per-head q/k norms), every layer sparse,
    # the top k renormalized. intermediate_size (dense layers', none here) is unused.
    return {
        "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": BOS, "decoder_sparse_step": 1,
        "eos_token_id": EOS, "head_dim": 32, "hidden_act": "silu", "hidden_size": HIDDEN,
        "initializer_range": 0.02, "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": POSITIONS, "max_window_layers": 28, "mlp_only_layers": [],
        "model_type": "qwen3_moe", "moe_intermediate_size": EXPERT_INTERMEDIATE,
        "norm_topk_prob": True, "num_attention_heads": HEADS, "num_experts": EXPERTS,
        "num_experts_per_tok": EXPERTS_PER_TOKEN, "num_hidden_layers": layers,
        "num_key_value_heads": KV_HEADS, "output_router_logits": False, "rms_norm_eps": 1e-06,
        "rope_scaling": None, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
        "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "float32",
        "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False,
        "vocab_size": VOCAB,
    }


def _olmoe_config(layers):
    # OlmoeConfig (transformers 4.46.3) as save_pretrained writes it: intermediate_size is each
    # expert's; q_norm over the whole projection (hidden), k_norm over kv_heads * head_dim; pad,
    # BOS and EOS set (its defaults, 1 and 50279, are OLMoE's own vocabulary's). As many KV heads
    # as heads, as OLMoE-1B-7B has: llama.cpp's OLMoE takes k_norm to be hidden wide (it refuses
    # a file with fewer KV heads).
    return {
        "architectures": ["OlmoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": BOS, "clip_qkv": None, "eos_token_id": EOS, "hidden_act": "silu",
        "hidden_size": HIDDEN, "initializer_range": 0.02,
        "intermediate_size": EXPERT_INTERMEDIATE, "max_position_embeddings": POSITIONS,
        "model_type": "olmoe", "norm_topk_prob": False, "num_attention_heads": HEADS,
        "num_experts": EXPERTS, "num_experts_per_tok": EXPERTS_PER_TOKEN,
        "num_hidden_layers": layers, "num_key_value_heads": HEADS,
        "output_router_logits": False, "pad_token_id": 0, "rms_norm_eps": 1e-05,
        "rope_scaling": None, "rope_theta": 10000.0, "router_aux_loss_coef": 0.01,
        "tie_word_embeddings": False, "torch_dtype": "float32",
        "transformers_version": "4.46.3", "use_cache": True, "vocab_size": VOCAB,
    }


_CONFIGS = {"llama3": _llama3_config, "qwen3": _qwen3_config, "olmo2": _olmo2_config,
            "gemma2": _gemma2_config, "gemma3": _gemma3_config, "mixtral": _mixtral_config,
            "qwen2_moe": _qwen2_moe_config, "qwen3_moe": _qwen3_moe_config,
            "olmoe": _olmoe_config}


def config_for(family, layers=None):
    if family not in _CONFIGS:
        raise ValueError(f"unknown family {family!r}: one of {', '.join(FAMILIES)}")
    layers = DEFAULT_LAYERS[family] if layers is None else layers
    if layers < 1 or (family == "gemma2" and layers < 2):
        raise ValueError(f"{family} needs at least {2 if family == 'gemma2' else 1} layers")
    return _CONFIGS[family](layers)


def family_of(config):
    return {"llama": "llama3", "qwen3": "qwen3", "olmo2": "olmo2", "gemma2": "gemma2",
            "gemma3_text": "gemma3", "mixtral": "mixtral", "qwen2_moe": "qwen2_moe",
            "qwen3_moe": "qwen3_moe", "olmoe": "olmoe"}[config["model_type"]]


def is_moe(config):
    return family_of(config) in MOE_FAMILIES


def moe_dims(config):
    """(experts, experts per token, expert intermediate, shared expert intermediate or 0)."""
    family = family_of(config)
    experts = config["num_local_experts" if family == "mixtral" else "num_experts"]
    inner = config.get("moe_intermediate_size", config["intermediate_size"])
    shared = config.get("shared_expert_intermediate_size", 0) if family == "qwen2_moe" else 0
    return experts, config["num_experts_per_tok"], inner, shared


def norm_topk(config):
    """Whether the router renormalizes the chosen experts' weights (Mixtral: always)."""
    return family_of(config) == "mixtral" or bool(config.get("norm_topk_prob", False))


def router_name(config, layer):
    block = "block_sparse_moe" if family_of(config) == "mixtral" else "mlp"
    return f"model.layers.{layer}.{block}.gate.weight"


def expert_names(config, layer, expert):
    """{"gate", "up", "down"}: the names of an expert's three matrices; expert "shared" is
    Qwen2-MoE's shared expert."""
    p = f"model.layers.{layer}."
    if expert == "shared":
        p += "mlp.shared_expert."
    elif family_of(config) == "mixtral":
        p += f"block_sparse_moe.experts.{expert}."
        return {"gate": p + "w1.weight", "up": p + "w3.weight", "down": p + "w2.weight"}
    else:
        p += f"mlp.experts.{expert}."
    return {"gate": p + "gate_proj.weight", "up": p + "up_proj.weight",
            "down": p + "down_proj.weight"}


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
        if family == "qwen2_moe":
            shapes[p + "self_attn.q_proj.bias"] = (heads * hd,)
            shapes[p + "self_attn.k_proj.bias"] = (kv * hd,)
            shapes[p + "self_attn.v_proj.bias"] = (kv * hd,)
        shapes[p + "self_attn.o_proj.weight"] = (d, heads * hd)
        if family in ("qwen3", "gemma3", "qwen3_moe"):
            shapes[p + "self_attn.q_norm.weight"] = (hd,)
            shapes[p + "self_attn.k_norm.weight"] = (hd,)
        elif family in ("olmo2", "olmoe"):
            shapes[p + "self_attn.q_norm.weight"] = (heads * hd,)
            shapes[p + "self_attn.k_norm.weight"] = (kv * hd,)
        shapes[p + "post_attention_layernorm.weight"] = (d,)
        if family in ("gemma2", "gemma3"):
            shapes[p + "pre_feedforward_layernorm.weight"] = (d,)
        if family in ("olmo2", "gemma2", "gemma3"):
            shapes[p + "post_feedforward_layernorm.weight"] = (d,)
        if family in MOE_FAMILIES:
            experts, _, fe, fs = moe_dims(config)
            shapes[router_name(config, i)] = (experts, d)
            for e in range(experts):
                names = expert_names(config, i, e)
                shapes[names["gate"]] = (fe, d)
                shapes[names["up"]] = (fe, d)
                shapes[names["down"]] = (d, fe)
            if fs:
                names = expert_names(config, i, "shared")
                shapes[names["gate"]] = (fs, d)
                shapes[names["up"]] = (fs, d)
                shapes[names["down"]] = (d, fs)
                shapes[p + "mlp.shared_expert_gate.weight"] = (1, d)
        else:
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
        if len(shape) == 2 or name.endswith(".bias"):
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


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _moe_mlp(config, w, layer, x, act):
    """A sparse layer's MLP on x [tokens, hidden], as transformers' SparseMoeBlock computes it:
    softmax of the router's logits over all experts, the top k (ties: the lower index first),
    their weights renormalized where the family does, each chosen expert's output weighted and
    summed; Qwen2-MoE adds sigmoid(x . shared_expert_gate) times the shared expert's. Returns
    (out, trace): trace["down_in"] [experts, tokens, expert intermediate] and
    trace["down_out"] [experts, tokens, hidden] (each expert's down_proj input and output,
    before the routing weight; zero where the expert does not see the token), "routes"
    [tokens, k] (expert ids, by weight), "route_weights" [tokens, k], "shared_in" /
    "shared_out" (the shared expert's down_proj input and output, every token; None without)."""
    experts, k, _, shared = moe_dims(config)
    t = x.shape[0]
    probs = _softmax(x @ w[router_name(config, layer)].T)
    routes = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    chosen = np.take_along_axis(probs, routes, axis=1)
    if norm_topk(config):
        chosen = chosen / chosen.sum(axis=1, keepdims=True)
    out = np.zeros_like(x)
    down_in = np.zeros((experts, t, moe_dims(config)[2]))
    down_out = np.zeros((experts, t, x.shape[1]))
    for e in range(experts):
        tokens, slot = np.nonzero(routes == e)
        if not len(tokens):
            continue
        n = expert_names(config, layer, e)
        xe = x[tokens]
        inner = act(xe @ w[n["gate"]].T) * (xe @ w[n["up"]].T)
        o = inner @ w[n["down"]].T
        down_in[e, tokens], down_out[e, tokens] = inner, o
        out[tokens] += chosen[tokens, slot][:, None] * o
    trace = {"down_in": down_in, "down_out": down_out, "routes": routes,
             "route_weights": chosen, "shared_in": None, "shared_out": None}
    if shared:
        n = expert_names(config, layer, "shared")
        inner = act(x @ w[n["gate"]].T) * (x @ w[n["up"]].T)
        o = inner @ w[n["down"]].T
        gate_w = w[f"model.layers.{layer}.mlp.shared_expert_gate.weight"]
        gate = 1.0 / (1.0 + np.exp(-(x @ gate_w.T)))
        out = out + gate * o
        trace["shared_in"], trace["shared_out"] = inner, o
    return out, trace


def reference_forward(config, weights, ids, stop_at_mlp_input=None, experts=False):
    """The family's forward pass over one sequence, in float64, as its transformers modeling file
    computes it. Returns (logits [tokens, vocab], down_in [layers][tokens, intermediate],
    down_out [layers][tokens, hidden]). With stop_at_mlp_input=L it returns that layer's MLP
    input (after its norm) [tokens, hidden] instead.

    In the mixtures of experts, down_in[L] is [experts, tokens, expert intermediate] and
    down_out[L] [experts, tokens, hidden]: each expert's down_proj input and output at the tokens
    routed to it, before the routing weight, zero elsewhere (Qwen2-MoE's shared expert is not
    among them). With experts=True a fourth element follows, a dict: "down_in_max" and
    "down_out_max" [layers, experts] (each expert's largest |down_proj input| / |output| over
    its tokens), "routes" and "route_weights" [layers][tokens, k] (the chosen experts, by
    weight, and their weights), "shared_in" / "shared_out" [layers][tokens, ...] (Qwen2-MoE's
    shared expert's down_proj input / output; None elsewhere)."""
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
    moe = is_moe(config)
    trace = {"routes": [], "route_weights": [], "shared_in": [], "shared_out": []}

    def norm(x, name):
        return _rms_norm(x, w[name], eps, gemma)

    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = h if family == "olmo2" else norm(h, p + "input_layernorm.weight")
        q = x @ w[p + "self_attn.q_proj.weight"].T
        k = x @ w[p + "self_attn.k_proj.weight"].T
        v = x @ w[p + "self_attn.v_proj.weight"].T
        if family == "qwen2_moe":
            q = q + w[p + "self_attn.q_proj.bias"]
            k = k + w[p + "self_attn.k_proj.bias"]
            v = v + w[p + "self_attn.v_proj.bias"]
        if family in ("olmo2", "olmoe"):  # over the whole projection, before the heads are split
            q = norm(q, p + "self_attn.q_norm.weight")
            k = norm(k, p + "self_attn.k_norm.weight")
        q = q.reshape(t, heads, hd).transpose(1, 0, 2)
        k = k.reshape(t, kv, hd).transpose(1, 0, 2)
        v = v.reshape(t, kv, hd).transpose(1, 0, 2)
        if family in ("qwen3", "gemma3", "qwen3_moe"):  # per head
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
        if moe:
            out, layer_trace = _moe_mlp(config, w, i, x, act)
            down_in.append(layer_trace["down_in"])
            down_out.append(layer_trace["down_out"])
            for key in trace:
                trace[key].append(layer_trace[key])
        else:
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
    if not experts:
        return logits, down_in, down_out
    if not moe:
        raise ValueError(f"experts=True: {family} has no experts")
    if family != "qwen2_moe":
        trace["shared_in"] = trace["shared_out"] = None
    trace["down_in_max"] = np.array([np.abs(a).max(axis=(1, 2)) for a in down_in])
    trace["down_out_max"] = np.array([np.abs(a).max(axis=(1, 2)) for a in down_out])
    return logits, down_in, down_out, trace


def _plant_gain(config, target):
    """g with act(g) * g = target (g is about sqrt(target): act(g) is g within 0.5% there)."""
    act = _gelu_tanh if family_of(config) in ("gemma2", "gemma3") else _silu
    g = math.sqrt(target)
    for _ in range(3):
        g *= math.sqrt(target / (act(g) * g))
    return g, float(act(g) * g)


def _largest_down_input(config, weights):
    """The largest |down_proj input| of the model over CALIBRATION_IDS: every layer's MLP, every
    expert's at the tokens routed to it, and Qwen2-MoE's shared expert's."""
    out = reference_forward(config, weights, CALIBRATION_IDS, experts=is_moe(config))
    peaks = [float(np.abs(a).max()) for a in out[1]]
    if is_moe(config) and out[3]["shared_in"] is not None:
        peaks += [float(np.abs(a).max()) for a in out[3]["shared_in"]]
    return max(peaks)


def plant_super_weight(config, weights, layer, row, col, value):
    """Plants a super weight in place (see the module's docstring); returns the down_proj input
    it makes at (BOS, col). Dense families only (plant_super_expert: the mixtures of
    experts)."""
    if is_moe(config):
        raise ValueError(f"{family_of(config)} has experts: plant a super expert "
                         "(--plant_expert LAYER,EXPERT,ROW,COL,VALUE)")
    d, f = config["hidden_size"], config["intermediate_size"]
    if not (0 <= layer < config["num_hidden_layers"] and 0 <= row < d and 0 <= col < f):
        raise ValueError(f"--plant {layer},{row},{col}: out of range (layers "
                         f"{config['num_hidden_layers']}, rows {d}, columns {f})")
    target = PLANT_MARGIN * _largest_down_input(config, weights)
    x = reference_forward(config, weights, [BOS], stop_at_mlp_input=layer)[0]
    # Rows along x with gate = up = g at BOS, g solving act(g) * g = target.
    g, planted = _plant_gain(config, target)
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
    return planted


def plant_super_expert(config, weights, layer, expert, row, col, value):
    """Plants a super expert in place (see the module's docstring): in layer `layer`, expert
    `expert`'s down projection gets weight[row, col] = value, its gate and up rows `col` make
    channel col fire on BOS (PLANT_MARGIN times the largest |down_proj input| of any expert of
    the intact model), the rest of its down column col is divided by PLANT_MARGIN, and the
    router's row `expert` is raised along BOS's MLP input until BOS's logit for the expert is
    ROUTER_MARGIN above every other expert's (so that BOS is routed to it, first). Returns the
    down_proj input it makes at (BOS, col)."""
    if not is_moe(config):
        raise ValueError(f"{family_of(config)} has no experts: plant a super weight "
                         "(--plant LAYER,ROW,COL,VALUE)")
    experts, _, fe, _ = moe_dims(config)
    d = config["hidden_size"]
    if not (0 <= layer < config["num_hidden_layers"] and 0 <= expert < experts and
            0 <= row < d and 0 <= col < fe):
        raise ValueError(f"--plant_expert {layer},{expert},{row},{col}: out of range (layers "
                         f"{config['num_hidden_layers']}, experts {experts}, rows {d}, "
                         f"columns {fe})")
    target = PLANT_MARGIN * _largest_down_input(config, weights)
    x = reference_forward(config, weights, [BOS], stop_at_mlp_input=layer)[0]
    g, planted = _plant_gain(config, target)
    along = g * x / float(x @ x)
    names = expert_names(config, layer, expert)
    weights[names["gate"]][col] = along.astype(np.float32)
    weights[names["up"]][col] = along.astype(np.float32)
    down = weights[names["down"]]
    others = np.arange(d) != row
    down[others, col] = (down[others, col] / PLANT_MARGIN).astype(np.float32)
    down[row, col] = np.float32(value)
    # The router: row `expert` raised along x (the other tokens' logits move by as much as their
    # MLP input lies along BOS's), only as far as it takes.
    router = weights[router_name(config, layer)]
    logits = router.astype(np.float64) @ x
    short = float(np.delete(logits, expert).max()) + ROUTER_MARGIN - float(logits[expert])
    if short > 0:
        router[expert] = (router[expert] + short * x / float(x @ x)).astype(np.float32)
    return planted


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
    (config, weights). plant: None, (layer, row, col, value) for a dense family's super weight,
    or (layer, expert, row, col, value) for a mixture of experts' super expert."""
    config = config_for(family, layers)
    weights = random_weights(config, seed)
    if plant is not None:
        plant = tuple(plant)
        want = 5 if family in MOE_FAMILIES else 4
        if len(plant) != want:
            raise ValueError(
                f"plant for {family}: " +
                ("(layer, expert, row, col, value)" if want == 5 else "(layer, row, col, value)"))
        if want == 5:
            plant_super_expert(config, weights, *plant)
        else:
            plant_super_weight(config, weights, *plant)
    write_hf(out_dir, config, weights)
    if gguf:
        to_gguf(out_dir, gguf, outtype)
    return config, weights


# --- llama.cpp's converter ------------------------------------------------------------------

# Runs convert_hf_to_gguf.py once per job (argv lists) in this process. torch 1.13 lacks dtypes
# that the converter names at import or in its dtype tables; distinct placeholders serve, as no
# tensor here has those types. The converter's Olmo2, OLMoE and Qwen2-MoE classes (and Qwen3-MoE,
# which defers to Qwen2-MoE's) know only byte-level BPE tokenizers (their models' own): given
# tokenizer.model, as here, they write the SentencePiece vocabulary as Llama's does (the
# tokenizer the directory has; the weights and hyperparameters are converted unchanged). Mixtral
# goes through the Llama class, which reads SentencePiece already.
_CONVERT_SHIM = r"""
import json, runpy, sys
import torch
for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "uint16",
             "uint32", "uint64"):
    if not hasattr(torch, name):
        setattr(torch, name, type("missing_torch_" + name, (), {})())
import conversion.olmo, conversion.qwen
def sentencepiece_first(cls):
    own = cls.set_vocab
    def set_vocab(self):
        if (self.dir_model / "tokenizer.model").is_file():
            self._set_vocab_sentencepiece()
        else:
            own(self)
    cls.set_vocab = set_vocab
for cls in (conversion.olmo.Olmo2Model, conversion.olmo.OlmoeModel,
            conversion.qwen.Qwen2MoeModel):
    sentencepiece_first(cls)
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
    parser.add_argument("--plant", help="LAYER,ROW,COL,VALUE: plant a super weight (the dense "
                        "families)")
    parser.add_argument("--plant_expert", help="LAYER,EXPERT,ROW,COL,VALUE: plant a super "
                        "expert (the mixtures of experts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int)
    args = parser.parse_args()
    planted = None
    if args.plant and args.plant_expert:
        parser.error("--plant and --plant_expert: one or the other")
    if args.plant:
        if args.family in MOE_FAMILIES:
            parser.error(f"{args.family} has experts: --plant_expert LAYER,EXPERT,ROW,COL,VALUE")
        parts = args.plant.split(",")
        if len(parts) != 4:
            parser.error("--plant takes LAYER,ROW,COL,VALUE")
        planted = (int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3]))
    if args.plant_expert:
        if args.family not in MOE_FAMILIES:
            parser.error(f"{args.family} has no experts: --plant LAYER,ROW,COL,VALUE")
        parts = args.plant_expert.split(",")
        if len(parts) != 5:
            parser.error("--plant_expert takes LAYER,EXPERT,ROW,COL,VALUE")
        try:
            planted = tuple(int(p) for p in parts[:4]) + (float(parts[4]),)
        except ValueError:
            parser.error("--plant_expert takes LAYER,EXPERT,ROW,COL,VALUE (numbers)")
    try:
        make(args.family, args.out_dir, plant=planted, seed=args.seed, layers=args.layers,
             gguf=args.gguf, outtype=args.outtype)
    except (ValueError, RuntimeError) as e:
        sys.exit(f"make_test_model: {e}")


if __name__ == "__main__":
    main()
