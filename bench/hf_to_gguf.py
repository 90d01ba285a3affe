"""Writes the benchmark's random llama (a Hugging Face directory with bf16 safetensors, from
make_random_llama.py) as a GGUF file in F32 or BF16, so that llama.cpp can score the same
weights as the engine and transformers. The q and k rows are permuted as llama.cpp's own
converter does for llama (its rotary layout); the vocabulary is a synthetic SentencePiece one
of the model's size (control tokens, the 256 byte tokens, then unique pieces): the benchmark
scores token ids, never text.

    hf_to_gguf.py MODEL_DIR OUT.gguf F32|BF16
"""
import json
import os
import struct
import sys

import gguf
import numpy as np


def read_bf16_tensors(path):
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "BF16", (name, t["dtype"])
        begin, end = t["data_offsets"]
        yield name, data[begin:end].view(np.uint16).reshape(t["shape"])


def permute(w, heads):
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main(model_dir, out, kind):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w = gguf.GGUFWriter(out, "llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(cfg["hidden_size"] // heads)
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if kind == "F32" else gguf.LlamaFileType.MOSTLY_BF16)
    vocab = cfg["vocab_size"]
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [f"\u2581p{i}" for i in range(vocab - len(pieces))]
    types = [2, 3, 3] + [6] * 256 + [1] * (vocab - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores([-float(i) for i in range(vocab)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
                 "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down"}
    for name, bits in read_bf16_tensors(os.path.join(model_dir, "model.safetensors")):
        if name in names:
            gname = names[name]
        else:
            _, _, layer, rest = name.split(".", 3)
            gname = f"blk.{layer}.{per_layer[rest.rsplit('.', 1)[0]]}.weight"
        if name.endswith("q_proj.weight"):
            bits = permute(bits, heads)
        elif name.endswith("k_proj.weight"):
            bits = permute(bits, kv_heads)
        if kind == "F32" or bits.ndim == 1:  # norms are F32 in llama.cpp's files
            w.add_tensor(gname, np.ascontiguousarray((bits.astype(np.uint32) << 16).view(np.float32)))
        else:
            w.add_tensor(gname, np.ascontiguousarray(bits), raw_dtype=gguf.GGMLQuantizationType.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
