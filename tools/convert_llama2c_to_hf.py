#!/usr/bin/env python3
"""Converts a llama2.c checkpoint (and its SentencePiece tokenizer model) into a Hugging Face
Llama directory, so that transformers can serve as the oracle for it.

  convert_llama2c_to_hf.py stories260K.bin tok512.model OUT_DIR

llama2.c stores q/k rows in interleaved-pair RoPE order; Hugging Face uses rotate-half, so those
two matrices are permuted exactly as transformers' own Llama conversion script does.
"""
import json
import os
import struct
import sys

import numpy as np
from safetensors.numpy import save_file


def permute(w, n_heads):
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def convert(bin_path, spm_path, out_dir):
    with open(bin_path, "rb") as f:
        dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack("7i", f.read(28))
        data = np.frombuffer(f.read(), dtype=np.float32)
    shared = vocab > 0
    vocab = abs(vocab)
    head = dim // heads
    kv_dim = kv_heads * head
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        out = data[pos:pos + n].reshape(shape)
        pos += n
        return out

    embed = take(vocab, dim)
    rms_att = take(layers, dim)
    wq = take(layers, dim, dim)
    wk = take(layers, kv_dim, dim)
    wv = take(layers, kv_dim, dim)
    wo = take(layers, dim, dim)
    rms_ffn = take(layers, dim)
    w1 = take(layers, hidden, dim)
    w2 = take(layers, dim, hidden)
    w3 = take(layers, hidden, dim)
    norm = take(dim)
    take(seq_len, head)  # RoPE tables
    lm_head = embed if shared else take(vocab, dim)
    assert pos == data.size, "checkpoint size does not match its header"

    t = {"model.embed_tokens.weight": embed, "model.norm.weight": norm}
    if not shared:
        t["lm_head.weight"] = lm_head
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = rms_att[i]
        t[p + "post_attention_layernorm.weight"] = rms_ffn[i]
        t[p + "self_attn.q_proj.weight"] = permute(wq[i], heads)
        t[p + "self_attn.k_proj.weight"] = permute(wk[i], kv_heads)
        t[p + "self_attn.v_proj.weight"] = wv[i]
        t[p + "self_attn.o_proj.weight"] = wo[i]
        t[p + "mlp.gate_proj.weight"] = w1[i]
        t[p + "mlp.down_proj.weight"] = w2[i]
        t[p + "mlp.up_proj.weight"] = w3[i]
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in t.items()},
              os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": dim,
        "intermediate_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "vocab_size": vocab, "max_position_embeddings": seq_len,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": shared,
        "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    from transformers import LlamaTokenizerFast
    tok = LlamaTokenizerFast(vocab_file=spm_path, legacy=False, from_slow=True,
                             add_prefix_space=True, add_bos_token=True)
    tok.save_pretrained(out_dir)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    convert(*sys.argv[1:])
