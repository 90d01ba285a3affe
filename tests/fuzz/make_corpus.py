#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora, tests/fuzz/corpus/<fuzzer>/seed-*: the committed files are
what the fuzzers start from (make fuzz-test, make fuzz); this script is how they were made, and
makes them again byte for byte from the same inputs.

Seeds are small real files and files built as the unit tests build malformed ones:
  gguf         llama.cpp's vocabulary GGUFs (testdata/vocab) with their arrays cut to 300
               entries; SmolLM2's real metadata (models/, make setup) on tiny tensors of every
               type the engine reads, as llama, qwen2, phi3 and olmo, and as the newer families:
               qwen3, olmo2, gemma2 and gemma3 (sliding windows, soft-capping, the local rope
               base, linear rope scaling, the pattern as flags), Llama 3's rope_freqs.weight, and
               the mixtures of experts (mixtral as llama with expert_count, qwen2moe with its
               shared expert, qwen3moe, olmoe) with stacked expert tensors; those load_gguf.cc
               refuses by name (yarn scaling, experts in a dense model, a stack of the wrong
               count, a pattern of the wrong length...); gguf_test.cc's small file,
               its truncations, bad magic and version, unsupported and misaligned types, tensors
               outside the file, huge values and counts.
  safetensors  the tiny models' weights below; the real TinyStories header with its data cut;
               safetensors_test.cc's good and malformed files.
  tokenizer    llama.cpp's tokenizer test strings, WikiText-2 and TinyStories lines, the oracle's
               multilingual strings, special tokens, invalid UTF-8.
  hf_dir       Hugging Face directories (hf_dir_fuzzer.cc: config.json, tokenizer.json, index,
               weights, NUL-separated): TinyStories' config and tokenizer on tiny weights; tiny
               llama, mistral, qwen2, olmo and phi3 models with tokenizer.json files trained by
               the `tokenizers` library as tests/oracle/test_tokenizer_families_oracle.py trains
               its families; sharded, tied and untied, F32/F16/BF16; broken configs, tokenizers
               and weights as model_test.cc breaks them; tiny qwen3, olmo2, gemma2, gemma3_text
               (layer_types, sliding_window_pattern), mixtral, qwen2_moe, qwen3_moe and olmoe
               models (one tensor per expert), and the configs load_hf.cc refuses by name
               (layer_types of the wrong length, mlp_only_layers, a negative sliding_window...).
  request      one serialized request per RPC and case (request_fuzzer.cc: the first byte picks
               the RPC), naming the fuzzer's models.

Files not named seed-* (crash reproducers) are left alone.

Usage: .venv/bin/python tests/fuzz/make_corpus.py   (needs make setup: models/ and .venv)
"""
import json
import os
import random
import struct
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TESTDATA = os.path.join(ROOT, "testdata")
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")
SMOLLM2 = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
WIKITEXT = os.path.join(TESTDATA, "text", "wiki.test.raw")

written = {}


def write(fuzzer, name, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    d = os.path.join(OUT, fuzzer)
    os.makedirs(d, exist_ok=True)
    assert (fuzzer, name) not in written, name
    written[(fuzzer, name)] = len(data)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------------------------------------
# GGUF: a reader of the header and a writer (the layout of engine/formats/gguf.cc).

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
          11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
GGML = {"F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20),
        "Q5_0": (6, 32, 22), "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34), "Q4_K": (12, 256, 144),
        "Q5_K": (13, 256, 176), "Q6_K": (14, 256, 210), "BF16": (30, 1, 2), "Q2_K": (10, 256, 84)}


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def unpack(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.unpack("<Q")
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s

    def value(self, t):
        if t == STRING:
            return self.string()
        if t == ARRAY:
            et, n = self.unpack("<I"), self.unpack("<Q")
            return (et, [self.value(et) for _ in range(n)])
        return self.unpack(SCALAR[t])


def read_gguf_metadata(path, limit=16 << 20):
    """(key, type, value) of a GGUF's metadata, in order (arrays as (elem_type, list))."""
    with open(path, "rb") as f:
        r = Reader(f.read(limit))
    assert r.unpack("<I") == 0x46554747
    r.unpack("<I")
    r.unpack("<Q")
    kvs = []
    for _ in range(r.unpack("<Q")):
        key = r.string().decode()
        t = r.unpack("<I")
        kvs.append((key, t, r.value(t)))
    return kvs


def encode_value(t, v):
    if t == STRING:
        v = v if isinstance(v, bytes) else v.encode()
        return struct.pack("<Q", len(v)) + v
    if t == ARRAY:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(encode_value(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


def gguf(kvs, tensors, version=3, alignment=32):
    """kvs: (key, type, value); tensors: (name, ne in GGML order, type name, data bytes)."""
    out = struct.pack("<IIQQ", 0x46554747, version, len(tensors), len(kvs))
    for key, t, v in kvs:
        out += encode_value(STRING, key) + struct.pack("<I", t) + encode_value(t, v)
    data = b""
    for name, ne, type_name, payload in tensors:
        data += b"\0" * (-len(data) % alignment)
        out += encode_value(STRING, name) + struct.pack("<I", len(ne))
        out += b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", GGML[type_name][0], len(data))
        data += payload
    if tensors:
        out += b"\0" * (-len(out) % alignment)
    return out + data


def tensor_bytes(rng, ne, type_name):
    """Deterministic bytes for a tensor; f32 vectors are ones (norm weights)."""
    n = 1
    for d in ne:
        n *= d
    _, block, size = GGML[type_name]
    if type_name == "F32" and len(ne) == 1:
        return struct.pack("<%df" % n, *([1.0] * n))
    if type_name in ("F32", "F16", "BF16"):
        vals = [rng.uniform(-0.5, 0.5) for _ in range(n)]
        if type_name == "F32":
            return struct.pack("<%df" % n, *vals)
        if type_name == "F16":
            return struct.pack("<%de" % n, *vals)
        return b"".join(struct.pack("<f", v)[2:] for v in vals)
    return bytes(rng.getrandbits(8) for _ in range(n // block * size))


def cut_vocab(kvs, n):
    """A vocabulary's arrays cut to their first n entries, its special ids kept inside."""
    out = []
    for key, t, v in kvs:
        if t == ARRAY and len(v[1]) > n:
            v = (v[0], v[1][:n])
        if key.startswith("tokenizer.ggml.") and key.endswith("_token_id") and v >= n:
            v = n - 1
        out.append((key, t, v))
    return out


def gguf_seeds():
    rng = random.Random(15)
    for path in sorted(os.listdir(os.path.join(TESTDATA, "vocab"))):
        if path.endswith(".gguf"):
            kvs = cut_vocab(read_gguf_metadata(os.path.join(TESTDATA, "vocab", path)), 300)
            write("gguf", "vocab-" + path[len("ggml-vocab-"):-len(".gguf")] + "-300.gguf",
                  gguf(kvs, []))

    # SmolLM2's metadata (vocabulary cut) on tiny tensors: hidden 32, 2 heads of 16, 1 KV head.
    real = cut_vocab(read_gguf_metadata(SMOLLM2), 300)
    hidden, inter, heads, kv_heads, head_dim, vocab = 32, 256, 2, 1, 16, 300
    sizes = {"embedding_length": hidden, "feed_forward_length": inter, "block_count": 1,
             "attention.head_count": heads, "attention.head_count_kv": kv_heads,
             "rope.dimension_count": head_dim}

    def metadata(arch):
        out = []
        for key, t, v in real:
            if key == "general.architecture":
                v = arch.encode()
            if key.startswith("llama."):
                key = arch + "." + key[len("llama."):]
                if key[len(arch) + 1:] in sizes:
                    v = sizes[key[len(arch) + 1:]]
            out.append((key, t, v))
        return out

    def model(arch, linear, embed="Q8_0", down=None, untied=False):
        q_rows, kv_rows = heads * head_dim, kv_heads * head_dim
        t = [("token_embd.weight", [hidden, vocab], embed), ("output_norm.weight", [hidden], "F32")]
        if untied:
            t.append(("output.weight", [hidden, vocab], embed))
        blk = "blk.0."
        if arch != "olmo":
            t += [(blk + "attn_norm.weight", [hidden], "F32"),
                  (blk + "ffn_norm.weight", [hidden], "F32")]
        else:
            t = [x for x in t if x[0] != "output_norm.weight"]
        if arch == "phi3":
            t += [(blk + "attn_qkv.weight", [hidden, q_rows + 2 * kv_rows], linear),
                  (blk + "ffn_up.weight", [hidden, 2 * inter], linear)]
        else:
            t += [(blk + "attn_q.weight", [hidden, q_rows], linear),
                  (blk + "attn_k.weight", [hidden, kv_rows], linear),
                  (blk + "attn_v.weight", [hidden, kv_rows], linear),
                  (blk + "ffn_gate.weight", [hidden, inter], linear),
                  (blk + "ffn_up.weight", [hidden, inter], linear)]
        if arch == "qwen2":
            t += [(blk + "attn_q.bias", [q_rows], "F32"), (blk + "attn_k.bias", [kv_rows], "F32"),
                  (blk + "attn_v.bias", [kv_rows], "F32")]
        t += [(blk + "attn_output.weight", [q_rows, hidden], linear),
              (blk + "ffn_down.weight", [inter, hidden], down or linear)]
        return gguf(metadata(arch), [(n, ne, ty, tensor_bytes(rng, ne, ty)) for n, ne, ty in t])

    write("gguf", "smollm2-tiny-q4_1.gguf", model("llama", "Q4_1"))
    write("gguf", "smollm2-tiny-f16-untied.gguf", model("llama", "F16", embed="F16", untied=True))
    write("gguf", "smollm2-tiny-bf16-f32.gguf", model("llama", "BF16", embed="F32"))
    write("gguf", "smollm2-tiny-q4_0-q5_0.gguf", model("llama", "Q4_0", down="Q5_0"))
    write("gguf", "smollm2-tiny-q5_1-q8_0.gguf", model("llama", "Q5_1", embed="Q5_1", down="Q8_0"))
    write("gguf", "smollm2-tiny-q4_k.gguf", model("llama", "Q8_0", down="Q4_K"))
    write("gguf", "smollm2-tiny-q5_k.gguf", model("llama", "Q8_0", down="Q5_K"))
    write("gguf", "smollm2-tiny-q6_k.gguf", model("llama", "Q8_0", down="Q6_K"))
    write("gguf", "qwen2-tiny-q8_0.gguf", model("qwen2", "Q8_0"))
    write("gguf", "phi3-tiny-f16.gguf", model("phi3", "F16"))
    write("gguf", "olmo-tiny-q8_0.gguf", model("olmo", "Q8_0"))

    # gguf_test.cc's SmallFile() and what the tests do to it.
    small = gguf([("general.architecture", STRING, "llama"), ("llama.block_count", 4, 2),
                  ("llama.rope.freq_base", 6, 10000.0),
                  ("tokenizer.ggml.tokens", ARRAY, (STRING, [b"a", b"b", b"ab"]))],
                 [("t.f32", [64], "F32", struct.pack("<f", 1.0) + b"\0" * 252),
                  ("t.q8", [32, 2], "Q8_0", b"\0" * 68)])
    write("gguf", "unit-small.gguf", small)
    for n in (3, 16, 24, 60, 120, len(small) // 2, len(small) - 1):
        write("gguf", "unit-small-cut-%d.gguf" % n, small[:n])
    write("gguf", "unit-bad-magic.gguf", b"X" + small[1:])
    write("gguf", "unit-bad-version.gguf", small[:4] + b"\x09" + small[5:])
    write("gguf", "unit-version-2.gguf", small[:4] + b"\x02" + small[5:])
    write("gguf", "unit-q2_k.gguf", gguf([], [("t", [256], "Q2_K", b"\0" * 84)]))
    write("gguf", "unit-outside.gguf", gguf([], [("big", [64, 64], "F32", b"\0" * 16)]))
    write("gguf", "unit-not-whole-blocks.gguf", gguf([], [("odd", [40], "Q8_0", b"\0" * 68)]))
    write("gguf", "unit-u64-max.gguf", gguf([("x.count", 10, 2**64 - 1)], []))
    hostile = bytearray(gguf([], []))
    hostile[16:24] = struct.pack("<Q", 1 << 60)
    write("gguf", "unit-hostile-kv-count.gguf", bytes(hostile))
    write("gguf", "unit-alignment-3.gguf",
          gguf([("general.alignment", 4, 3)], [("t", [8], "F32", b"\0" * 32)]))
    write("gguf", "unit-nested-array.gguf", gguf([("a", ARRAY, (ARRAY, []))], []))
    write("gguf", "unit-all-scalars.gguf",
          gguf([("k%d" % t, t, v) for t, v in [(0, 255), (1, -128), (2, 65535), (3, -1),
                                                (4, 2**32 - 1), (5, -2**31), (6, -1e38),
                                                (7, True), (10, 2**63), (11, -2**63),
                                                (12, 1e308)]] +
               [("arr", ARRAY, (6, [1.5, float("nan"), float("inf")]))], []))


# ---------------------------------------------------------------------------------------------
# GGUF: the newer families (load_gguf.cc, tensor_names.cc): per-head and whole-projection q/k
# norms, Gemma's four norms, soft-capping and sliding-window layers, rope scaling and rope
# factors, and mixtures of experts with llama.cpp's stacked expert tensors.

def retarget(real, arch, sizes, keys=(), drop=()):
    """SmolLM2's metadata as ARCH's: llama.* renamed, SIZES (keys without the arch) replaced,
    KEYS ((key without the arch, type, value)) added or replaced, DROP (the same) removed."""
    keys = {k: (t, v) for k, t, v in keys}
    out, done = [], set()
    for key, t, v in real:
        if key == "general.architecture":
            v = arch.encode()
        if key.startswith("llama."):
            short = key[len("llama."):]
            if short in drop:
                continue
            key = arch + "." + short
            if short in sizes:
                v = sizes[short]
            if short in keys:
                t, v = keys[short]
                done.add(short)
        out.append((key, t, v))
    for short, (t, v) in keys.items():
        if short not in done and short not in drop:
            out.append((arch + "." + short, t, v))
    return out


# Per architecture (llama.cpp's names): the block norms, the q/k norm (per head or over the whole
# projection), q/k/v biases, a mixture of experts, a shared expert.
GGUF_FAMILIES = {
    "llama": (("attn_norm", "ffn_norm"), None, False, False, False),
    "qwen2": (("attn_norm", "ffn_norm"), None, True, False, False),
    "qwen3": (("attn_norm", "ffn_norm"), "head", False, False, False),
    "olmo2": (("post_attention_norm", "post_ffw_norm"), "whole", False, False, False),
    "gemma2": (("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"), None, False,
               False, False),
    "gemma3": (("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"), "head", False,
               False, False),
    "mixtral": (("attn_norm", "ffn_norm"), None, False, True, False),
    "qwen2moe": (("attn_norm", "ffn_norm"), None, True, True, True),
    "qwen3moe": (("attn_norm", "ffn_norm"), "head", False, True, False),
    "olmoe": (("attn_norm", "ffn_norm"), "whole", False, True, False),
}


def gguf_family_seeds():
    rng = random.Random(2503)
    real = cut_vocab(read_gguf_metadata(SMOLLM2), 300)
    # Hidden 32, 2 heads of 16 (Q8_0's blocks of 32 fit every row), MLPs and experts 32 wide.
    hidden, heads, head_dim, vocab = 32, 2, 16, 300

    def family(family_name, linear, layers=1, kv_heads=1, inter=32, experts=4, used=2,
               expert_inter=32, shared_inter=64, stacked=None, keys=(), drop=(), extra=(),
               arch=None):
        """A tiny model of FAMILY_NAME (its tensors), written as ARCH (default the same) with
        KEYS; STACKED: the experts the stacked tensors hold (default all of them)."""
        norms, qk, bias, moe, shared = GGUF_FAMILIES[family_name]
        arch = arch or family_name
        sizes = {"embedding_length": hidden, "feed_forward_length": inter, "block_count": layers,
                 "attention.head_count": heads, "attention.head_count_kv": kv_heads,
                 "rope.dimension_count": head_dim}
        moe_keys = []
        if moe:
            moe_keys = [("expert_count", 4, experts), ("expert_used_count", 4, used)]
            if family_name != "mixtral":  # llama.cpp writes Mixtral's as feed_forward_length
                moe_keys.append(("expert_feed_forward_length", 4, expert_inter))
            if shared:
                moe_keys.append(("expert_shared_feed_forward_length", 4, shared_inter))
        kvs = retarget(real, arch, sizes, moe_keys + list(keys), drop)
        q_rows, kv_rows = heads * head_dim, kv_heads * head_dim
        t = [("token_embd.weight", [hidden, vocab], "Q8_0"),
             ("output_norm.weight", [hidden], "F32")]
        for l in range(layers):
            blk = "blk.%d." % l
            t += [(blk + n + ".weight", [hidden], "F32") for n in norms]
            t += [(blk + "attn_q.weight", [hidden, q_rows], linear),
                  (blk + "attn_k.weight", [hidden, kv_rows], linear),
                  (blk + "attn_v.weight", [hidden, kv_rows], linear),
                  (blk + "attn_output.weight", [q_rows, hidden], linear)]
            if bias:
                t += [(blk + "attn_q.bias", [q_rows], "F32"),
                      (blk + "attn_k.bias", [kv_rows], "F32"),
                      (blk + "attn_v.bias", [kv_rows], "F32")]
            if qk:
                t += [(blk + "attn_q_norm.weight", [head_dim if qk == "head" else q_rows], "F32"),
                      (blk + "attn_k_norm.weight", [head_dim if qk == "head" else kv_rows], "F32")]
            if moe:
                n = experts if stacked is None else stacked
                t += [(blk + "ffn_gate_inp.weight", [hidden, experts], "F32"),
                      (blk + "ffn_gate_exps.weight", [hidden, expert_inter, n], linear),
                      (blk + "ffn_up_exps.weight", [hidden, expert_inter, n], linear),
                      (blk + "ffn_down_exps.weight", [expert_inter, hidden, n], linear)]
                if shared:  # the shared expert's gate: [n_embd, 1], as llama.cpp writes it
                    t += [(blk + "ffn_gate_inp_shexp.weight", [hidden, 1], "F32"),
                          (blk + "ffn_gate_shexp.weight", [hidden, shared_inter], linear),
                          (blk + "ffn_up_shexp.weight", [hidden, shared_inter], linear),
                          (blk + "ffn_down_shexp.weight", [shared_inter, hidden], linear)]
            else:
                t += [(blk + "ffn_gate.weight", [hidden, inter], linear),
                      (blk + "ffn_up.weight", [hidden, inter], linear),
                      (blk + "ffn_down.weight", [inter, hidden], linear)]
        tensors = [(n, ne, ty, tensor_bytes(rng, ne, ty)) for n, ne, ty in t]
        tensors += [(n, ne, ty, data) for n, ne, ty, data in extra]
        return gguf(kvs, tensors)

    head_keys = [("attention.key_length", 4, head_dim), ("attention.value_length", 4, head_dim)]
    write("gguf", "qwen3-tiny-q8_0.gguf",
          family("qwen3", "Q8_0", keys=head_keys + [("rope.freq_base", 6, 1e6)]))
    write("gguf", "olmo2-tiny-f16.gguf", family("olmo2", "F16", keys=[("rope.freq_base", 6, 5e5)]))
    # Gemma 2: every other layer slides (no pattern key), both soft-cappings.
    gemma2_keys = head_keys + [("attention.sliding_window", 4, 8),
                               ("attn_logit_softcapping", 6, 50.0),
                               ("final_logit_softcapping", 6, 30.0)]
    write("gguf", "gemma2-tiny-q8_0.gguf", family("gemma2", "Q8_0", layers=2, keys=gemma2_keys))
    # Gemma 3: local layers' own rope base, linear scaling of the global ones, the pattern as one
    # flag per layer.
    gemma3_keys = head_keys + [
        ("rope.freq_base", 6, 1e6), ("rope.freq_base_swa", 6, 10000.0),
        ("rope.scaling.type", STRING, "linear"), ("rope.scaling.factor", 6, 8.0),
        ("attention.sliding_window", 4, 8), ("final_logit_softcapping", 6, 30.0),
        ("attention.sliding_window_pattern", ARRAY, (7, [True, False]))]
    write("gguf", "gemma3-tiny-bf16.gguf", family("gemma3", "BF16", layers=2, keys=gemma3_keys))
    write("gguf", "gemma3-tiny-pattern-every-2.gguf", family("gemma3", "Q8_0", layers=2, keys=[
        k if k[0] != "attention.sliding_window_pattern" else (k[0], 4, 2) for k in gemma3_keys]))
    # Llama 3.x: per-dimension rope factors (rotary dimension / 2 of them), as llama.cpp writes.
    freqs = [1.0, 1.0, 1.0, 1.0, 2.5, 5.0, 8.0, 8.0]
    write("gguf", "llama3-rope-freqs-q8_0.gguf", family("llama", "Q8_0", extra=[
        ("rope_freqs.weight", [head_dim // 2], "F32", struct.pack("<8f", *freqs))],
        keys=[("rope.freq_base", 6, 500000.0)]))
    # Mixtures of experts: stacked expert tensors [cols, rows, experts] and the router.
    write("gguf", "mixtral-tiny-q8_0.gguf", family("mixtral", "Q8_0", arch="llama"))
    write("gguf", "qwen2moe-tiny-q8_0.gguf", family("qwen2moe", "Q8_0"))
    write("gguf", "qwen3moe-tiny-q8_0.gguf", family("qwen3moe", "Q8_0", keys=head_keys))
    write("gguf", "olmoe-tiny-f16.gguf", family("olmoe", "F16", kv_heads=2, experts=2, used=1))

    # Refused: what load_gguf.cc and validate.cc turn away by name.
    write("gguf", "broken-rope-scaling-yarn.gguf", family("llama", "Q8_0", keys=[
        ("rope.scaling.type", STRING, "yarn"), ("rope.scaling.factor", 6, 4.0)]))
    write("gguf", "broken-rope-scaling-factor.gguf", family("llama", "Q8_0", keys=[
        ("rope.scaling.type", STRING, "linear"), ("rope.scaling.factor", 6, -2.0)]))
    write("gguf", "broken-rope-freqs-short.gguf", family("llama", "Q8_0", extra=[
        ("rope_freqs.weight", [4], "F32", struct.pack("<4f", 1, 2, 4, 8))]))
    write("gguf", "broken-qwen2-experts.gguf", family("qwen2", "Q8_0", keys=[
        ("expert_count", 4, 4), ("expert_used_count", 4, 2)]))
    write("gguf", "broken-qwen3moe-stacks-3.gguf",
          family("qwen3moe", "Q8_0", keys=head_keys, stacked=3))
    write("gguf", "broken-qwen3moe-no-expert-count.gguf",
          family("qwen3moe", "Q8_0", keys=head_keys, drop=("expert_count",)))
    write("gguf", "broken-olmoe-used-over-count.gguf",
          family("olmoe", "Q8_0", kv_heads=2, used=8))
    write("gguf", "broken-gemma3-pattern-length.gguf", family("gemma3", "Q8_0", layers=2, keys=[
        k if k[0] != "attention.sliding_window_pattern" else (k[0], ARRAY, (7, [True] * 3))
        for k in gemma3_keys]))
    # A negative window is clamped to none (accepted, no sliding layers).
    write("gguf", "gemma2-sliding-window-negative.gguf", family("gemma2", "Q8_0", layers=2, keys=[
        k if k[0] != "attention.sliding_window" else (k[0], 5, -1) for k in gemma2_keys]))


# ---------------------------------------------------------------------------------------------
# safetensors and Hugging Face directories.

def safetensors(tensors, metadata=None):
    """tensors: (name, dtype, shape, data bytes), stored in that order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def floats(rng, n, dtype):
    vals = [rng.uniform(-0.5, 0.5) for _ in range(n)]
    if dtype == "F32":
        return struct.pack("<%df" % n, *vals)
    if dtype == "F16":
        return struct.pack("<%de" % n, *vals)
    return b"".join(struct.pack("<f", v)[2:] for v in vals)


def hf_weights(rng, arch, c, dtype="F16", tied=True):
    hidden, inter, heads = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"]
    kv = c.get("num_key_value_heads", heads)
    hd = c.get("head_dim", hidden // heads)
    t = [("model.embed_tokens.weight", [c["vocab_size"], hidden])]
    if not tied:
        t.append(("lm_head.weight", [c["vocab_size"], hidden]))
    if arch != "olmo":
        t.append(("model.norm.weight", [hidden]))
    for layer in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        if arch != "olmo":
            t += [(p + "input_layernorm.weight", [hidden]),
                  (p + "post_attention_layernorm.weight", [hidden])]
        if arch == "phi3":
            t += [(p + "self_attn.qkv_proj.weight", [(heads + 2 * kv) * hd, hidden]),
                  (p + "mlp.gate_up_proj.weight", [2 * inter, hidden])]
        else:
            t += [(p + "self_attn.q_proj.weight", [heads * hd, hidden]),
                  (p + "self_attn.k_proj.weight", [kv * hd, hidden]),
                  (p + "self_attn.v_proj.weight", [kv * hd, hidden]),
                  (p + "mlp.gate_proj.weight", [inter, hidden]),
                  (p + "mlp.up_proj.weight", [inter, hidden])]
        if arch == "qwen2":
            t += [(p + "self_attn.q_proj.bias", [heads * hd]),
                  (p + "self_attn.k_proj.bias", [kv * hd]),
                  (p + "self_attn.v_proj.bias", [kv * hd])]
        t += [(p + "self_attn.o_proj.weight", [hidden, heads * hd]),
              (p + "mlp.down_proj.weight", [hidden, inter])]
    out = []
    for name, shape in t:
        n = 1
        for d in shape:
            n *= d
        out.append((name, dtype, shape, floats(rng, n, dtype)))
    return safetensors(out, {"format": "pt"})


def hf_dir(config, tokenizer=b"", index=b"", weights=b""):
    """hf_dir_fuzzer's input: the parts joined by NUL bytes."""
    enc = lambda x: json.dumps(x, indent=1).encode() if isinstance(x, dict) else x
    return b"\0".join([enc(config), enc(tokenizer), enc(index), weights])


def tiny_config(arch, vocab, **extra):
    c = {"model_type": arch, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": vocab,
         "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
         "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": True}
    c.update(extra)
    return c


# Regexes of the families' tokenizer.json files, as the oracle test has them.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def tokenizer_families():
    """Small tokenizer.json files of each family, trained by `tokenizers` on WikiText-2's start
    (the oracle test's pipelines, vocabularies of 300 to 600)."""
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, processors, trainers)
    with open(WIKITEXT, encoding="utf-8") as f:
        text = f.read().split("\n")[:3000]

    def train(tok, vocab_size, special=(), **args):
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special),
                                      show_progress=False, **args)
        tok.train_from_iterator(text, trainer)
        return tok

    def byte_level(pre, normalizer=None):
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizer
        tok.pre_tokenizer = pre
        tok.decoder = decoders.ByteLevel()
        return train(tok, 320, special=["<|endoftext|>"],
                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet())

    def sentencepiece(byte_fallback):
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=byte_fallback, fuse_unk=True))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
        special = ["<unk>", "<s>", "</s>"]
        if byte_fallback:
            special += ["<0x%02X>" % b for b in range(256)]
        tok = train(tok, 420 if byte_fallback else 200, special=special, limit_alphabet=60)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
        return tok

    byte_level_pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    fams = {
        "gpt2": byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False)),
        "llama3": byte_level(pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(LLAMA3_PATTERN), "isolated"), byte_level_pre])),
        "qwen2": byte_level(pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(GPT2_PATTERN), "isolated"), byte_level_pre]),
            normalizer=normalizers.NFC()),
        "sequence": byte_level(pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(" ", "merged_with_next"),
            pre_tokenizers.Punctuation("contiguous"), pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Split(Regex(r"[aeiou]"), "merged_with_previous", invert=True),
            pre_tokenizers.Whitespace(), pre_tokenizers.CharDelimiterSplit("|"),
            pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False)]),
            normalizer=normalizers.Sequence([
                normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip(),
                normalizers.Replace(Regex(r"\s+"), " "), normalizers.StripAccents(),
                normalizers.NFD()])),
        "spm-byte-fallback": sentencepiece(byte_fallback=True),
        "spm-unk": sentencepiece(byte_fallback=False),
    }
    for tok in fams.values():
        tok.add_special_tokens(["<|im_start|>", "<|im_end|>",
                                AddedToken("<mask>", lstrip=True, rstrip=True, special=True)])
        tok.add_tokens([AddedToken("[USER]", normalized=False, special=False),
                        AddedToken("Hello", normalized=True, special=False, single_word=True)])
    return {name: json.loads(tok.to_str()) for name, tok in fams.items()}


def hf_seeds():
    rng = random.Random(656)
    stories = json.loads(read(os.path.join(TESTDATA, "hf_tinystories_656k", "config.json")))
    stories_tok = read(os.path.join(TESTDATA, "hf_tinystories_656k", "tokenizer.json"))
    # TinyStories' own config and tokenizer on tiny weights (its 2,048 tokens, hidden 8).
    c = dict(stories, hidden_size=8, intermediate_size=16, num_attention_heads=2,
             num_key_value_heads=1, num_hidden_layers=1)
    w = hf_weights(rng, "llama", c)
    write("hf_dir", "tinystories-tiny", hf_dir(c, stories_tok, b"", w))
    write("safetensors", "tinystories-tiny.safetensors", w)

    families = tokenizer_families()
    archs = {"gpt2": ("llama", {}), "llama3": ("llama", {"rope_scaling": {
                 "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                 "high_freq_factor": 4.0, "original_max_position_embeddings": 32}}),
             "qwen2": ("qwen2", {}), "sequence": ("mistral", {"head_dim": 4}),
             "spm-byte-fallback": ("phi3", {"partial_rotary_factor": 0.5}),
             "spm-unk": ("olmo", {"clip_qkv": 8.0})}
    dtypes = {"gpt2": "F16", "llama3": "BF16", "qwen2": "F32", "sequence": "F16",
              "spm-byte-fallback": "BF16", "spm-unk": "F32"}
    for name, tok in families.items():
        arch, extra = archs[name]
        vocab = len(tok["model"]["vocab"]) + len(tok["added_tokens"])
        c = tiny_config(arch, vocab, **extra)
        w = hf_weights(rng, arch, c, dtypes[name], tied=name != "qwen2")
        write("hf_dir", "%s-%s" % (arch, name), hf_dir(c, tok, b"", w))
        write("safetensors", "%s-%s.safetensors" % (arch, name), w)

    gpt2 = families["gpt2"]
    vocab = len(gpt2["model"]["vocab"]) + len(gpt2["added_tokens"])
    c = tiny_config("llama", vocab)
    w = hf_weights(rng, "llama", c)
    index = {"metadata": {"total_size": len(w)},
             "weight_map": {k: "model-00001-of-00001.safetensors"
                            for k in json.loads(w[8:8 + struct.unpack("<Q", w[:8])[0]])
                            if k != "__metadata__"}}
    write("hf_dir", "llama-sharded", hf_dir(c, gpt2, index, w))
    write("hf_dir", "llama-no-tokenizer", hf_dir(c, b"", b"", w))
    write("hf_dir", "llama-shard-outside", hf_dir(c, gpt2, {"weight_map": {"a": "../x"}}, w))
    # Broken as model_test.cc breaks TinyStories' directory.
    write("hf_dir", "broken-arch", hf_dir(dict(c, model_type="gpt_neox"), gpt2, b"", w))
    write("hf_dir", "broken-intermediate", hf_dir(dict(c, intermediate_size=17), gpt2, b"", w))
    write("hf_dir", "broken-layers", hf_dir(dict(c, num_hidden_layers=2), gpt2, b"", w))
    write("hf_dir", "broken-weights-cut", hf_dir(c, gpt2, b"", w[:-100]))
    write("hf_dir", "broken-vocab-small", hf_dir(dict(c, vocab_size=8), gpt2, b"", w))
    write("hf_dir", "broken-heads", hf_dir(dict(c, num_key_value_heads=3), gpt2, b"", w))
    write("hf_dir", "broken-rope-scaling", hf_dir(dict(c, rope_scaling={"type": "yarn"}), gpt2,
                                                  b"", w))
    write("hf_dir", "broken-config-not-json", hf_dir(b"{", gpt2, b"", w))
    missing = dict(c)
    del missing["hidden_size"]
    write("hf_dir", "broken-config-missing", hf_dir(missing, gpt2, b"", w))
    # tokenizer_test.cc's refused tokenizers.
    base = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}
    for i, part in enumerate([
            {"model": {"type": "WordPiece", "vocab": {"a": 0}}},
            {"normalizer": {"type": "Precompiled", "precompiled_charsmap": ""}},
            {"pre_tokenizer": {"type": "UnicodeScripts"}}, {"decoder": {"type": "WordPiece"}},
            {"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "x"},
                               "behavior": "Sideways", "invert": False}},
            {"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"},
                               "behavior": "Isolated", "invert": False}},
            {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.5}},
            {"added_tokens": [{"id": 99, "content": "x", "special": True}]}]):
        tok = dict(base, **part)
        write("hf_dir", "broken-tokenizer-%d" % i,
              hf_dir(tiny_config("llama", 3, bos_token_id=None, eos_token_id=None), tok, b"",
                     hf_weights(rng, "llama", tiny_config("llama", 3))))

    # The real TinyStories weights' header, its data cut short.
    real = read(os.path.join(TESTDATA, "hf_tinystories_656k", "model.safetensors"))
    n = struct.unpack("<Q", real[:8])[0]
    write("safetensors", "tinystories-header-data-cut.safetensors", real[:8 + n + 256])

    hf_family_seeds(families)


# Hugging Face names of the newer families (tensor_names.cc): the block norms, the q/k norm (per
# head or over the whole projection), q/k/v biases, and the MLP: dense, experts
# (mlp.experts.E.*), Mixtral's experts (block_sparse_moe.experts.E.w1/w3/w2), or experts beside
# a shared expert.
HF_FAMILIES = {
    "qwen3": (("input_layernorm", "post_attention_layernorm"), "head", False, "dense"),
    "olmo2": (("post_attention_layernorm", "post_feedforward_layernorm"), "whole", False, "dense"),
    "gemma2": (("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                "post_feedforward_layernorm"), None, False, "dense"),
    "gemma3_text": (("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"), "head", False, "dense"),
    "mixtral": (("input_layernorm", "post_attention_layernorm"), None, False, "mixtral"),
    "qwen2_moe": (("input_layernorm", "post_attention_layernorm"), None, True, "shared"),
    "qwen3_moe": (("input_layernorm", "post_attention_layernorm"), "head", False, "experts"),
    "olmoe": (("input_layernorm", "post_attention_layernorm"), "whole", False, "experts"),
}


def hf_family_weights(rng, c, dtype="F16", experts=None):
    """A tiny model of c["model_type"]'s family; EXPERTS: the experts stored (default the
    config's)."""
    norms, qk, bias, mlp = HF_FAMILIES[c["model_type"]]
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    kv = c.get("num_key_value_heads", heads)
    hd = c.get("head_dim", hidden // heads)
    n_experts = c.get("num_local_experts", c.get("num_experts", 0))
    stored = n_experts if experts is None else experts
    inter = c.get("moe_intermediate_size", c["intermediate_size"])
    t = [("model.embed_tokens.weight", [c["vocab_size"], hidden]), ("model.norm.weight", [hidden])]
    if not c.get("tie_word_embeddings", True):
        t.append(("lm_head.weight", [c["vocab_size"], hidden]))
    for layer in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        t += [(p + n + ".weight", [hidden]) for n in norms]
        t += [(p + "self_attn.q_proj.weight", [heads * hd, hidden]),
              (p + "self_attn.k_proj.weight", [kv * hd, hidden]),
              (p + "self_attn.v_proj.weight", [kv * hd, hidden]),
              (p + "self_attn.o_proj.weight", [hidden, heads * hd])]
        if bias:
            t += [(p + "self_attn.q_proj.bias", [heads * hd]),
                  (p + "self_attn.k_proj.bias", [kv * hd]),
                  (p + "self_attn.v_proj.bias", [kv * hd])]
        if qk:
            t += [(p + "self_attn.q_norm.weight", [hd if qk == "head" else heads * hd]),
                  (p + "self_attn.k_norm.weight", [hd if qk == "head" else kv * hd])]
        if mlp == "dense":
            t += [(p + "mlp.gate_proj.weight", [inter, hidden]),
                  (p + "mlp.up_proj.weight", [inter, hidden]),
                  (p + "mlp.down_proj.weight", [hidden, inter])]
        elif mlp == "mixtral":
            q = p + "block_sparse_moe."
            t.append((q + "gate.weight", [n_experts, hidden]))
            for e in range(stored):
                t += [(q + "experts.%d.w1.weight" % e, [inter, hidden]),
                      (q + "experts.%d.w2.weight" % e, [hidden, inter]),
                      (q + "experts.%d.w3.weight" % e, [inter, hidden])]
        else:
            t.append((p + "mlp.gate.weight", [n_experts, hidden]))
            for e in range(stored):
                q = p + "mlp.experts.%d." % e
                t += [(q + "gate_proj.weight", [inter, hidden]),
                      (q + "up_proj.weight", [inter, hidden]),
                      (q + "down_proj.weight", [hidden, inter])]
            if mlp == "shared":  # the shared expert's gate: a one-row linear layer
                si = c["shared_expert_intermediate_size"]
                t += [(p + "mlp.shared_expert.gate_proj.weight", [si, hidden]),
                      (p + "mlp.shared_expert.up_proj.weight", [si, hidden]),
                      (p + "mlp.shared_expert.down_proj.weight", [hidden, si]),
                      (p + "mlp.shared_expert_gate.weight", [1, hidden])]
    out = []
    for name, shape in t:
        n = 1
        for d in shape:
            n *= d
        out.append((name, dtype, shape, floats(rng, n, dtype)))
    return safetensors(out, {"format": "pt"})


def hf_family_seeds(families):
    """Tiny Qwen3, OLMo 2, Gemma 2 and 3, Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE directories
    (their configs' keys as transformers saves them), and configs load_hf.cc refuses by name.
    Two carry a tokenizer.json; the rest none (a vocabulary of 32) to stay small."""
    rng = random.Random(3003)

    def vocab_of(tok):
        return len(tok["model"]["vocab"]) + len(tok["added_tokens"])

    def seed(name, c, tok=b"", dtype="F16", experts=None):
        write("hf_dir", name, hf_dir(c, tok, b"", hf_family_weights(rng, c, dtype, experts)))

    gpt2, spm = families["gpt2"], families["spm-unk"]
    moe = {"num_experts": 4, "num_experts_per_tok": 2, "decoder_sparse_step": 1,
           "mlp_only_layers": [], "tie_word_embeddings": False}
    qwen3 = tiny_config("qwen3", vocab_of(gpt2), head_dim=8, rope_theta=1e6)
    seed("qwen3-gpt2", qwen3, gpt2, "BF16")
    seed("olmo2", tiny_config("olmo2", 32, rope_theta=500000.0, tie_word_embeddings=False), b"",
         "F32")
    gemma2 = tiny_config("gemma2", vocab_of(spm), num_hidden_layers=2, head_dim=4,
                         hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=4,
                         attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                         sliding_window=8)
    seed("gemma2-spm-unk", gemma2, spm)
    gemma3 = tiny_config("gemma3_text", 32, num_hidden_layers=2, head_dim=4,
                         hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=4,
                         attn_logit_softcapping=None, final_logit_softcapping=None,
                         sliding_window=8, sliding_window_pattern=6,
                         layer_types=["sliding_attention", "full_attention"],
                         rope_theta=1e6, rope_local_base_freq=10000.0,
                         rope_scaling={"factor": 8.0, "rope_type": "linear"})
    seed("gemma3_text", gemma3, b"", "BF16")
    no_types = dict(gemma3, sliding_window_pattern=2)
    del no_types["layer_types"]
    seed("gemma3_text-pattern-2", no_types)
    seed("mixtral", tiny_config("mixtral", 32, num_local_experts=4, num_experts_per_tok=2,
                                tie_word_embeddings=False))
    qwen2_moe = tiny_config("qwen2_moe", 32, moe_intermediate_size=8,
                            shared_expert_intermediate_size=16, norm_topk_prob=False, **moe)
    seed("qwen2_moe", qwen2_moe, b"", "F32")
    qwen3_moe = tiny_config("qwen3_moe", 32, head_dim=8, moe_intermediate_size=8,
                            norm_topk_prob=True, **moe)
    seed("qwen3_moe", qwen3_moe, b"", "BF16")
    olmoe = tiny_config("olmoe", 32, num_key_value_heads=2, clip_qkv=None, norm_topk_prob=False,
                        **moe)
    seed("olmoe", olmoe)

    # Refused by name.
    seed("broken-gemma2-layer-types-length",
         dict(gemma2, vocab_size=32, layer_types=["sliding_attention"] * 3))
    seed("broken-gemma3-layer-type-unknown",
         dict(gemma3, layer_types=["sliding_attention", "chunked_attention"]))
    seed("broken-gemma3-sliding-window-negative", dict(gemma3, sliding_window=-1))
    seed("broken-gemma2-activation", dict(gemma2, vocab_size=32, hidden_activation="gelu"))
    seed("broken-qwen2_moe-mlp-only-layers", dict(qwen2_moe, mlp_only_layers=[0]))
    seed("broken-qwen3_moe-sparse-step-2", dict(qwen3_moe, decoder_sparse_step=2))
    seed("broken-qwen3_moe-norm-topk-string", dict(qwen3_moe, norm_topk_prob="yes"))
    seed("broken-olmoe-per-token-over-experts", dict(olmoe, num_experts_per_tok=8))
    seed("broken-mixtral-3-of-4-experts", tiny_config(
        "mixtral", 32, num_local_experts=4, num_experts_per_tok=2), experts=3)


def safetensors_seeds():
    def build(header, data_bytes):
        h = header.encode()
        return struct.pack("<Q", len(h)) + h + b"\0" * data_bytes

    def unframed(name, file):
        """safetensors_fuzzer's second reading: the header JSON, NUL, the data."""
        n = struct.unpack("<Q", file[:8])[0]
        write("safetensors", name, file[8:8 + n] + b"\0" + file[8 + n:])

    good = build('{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],'
                 '"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},'
                 '"ids":{"dtype":"I64","shape":[1],"data_offsets":[32,40]}}', 40)
    write("safetensors", "unit-good.safetensors", good)
    for n in (5, 8, 30, len(good) - 41, len(good) - 1):
        write("safetensors", "unit-good-cut-%d.safetensors" % n, good[:n])
    for i, (header, data) in enumerate([
            ("{not json", 0),
            ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}', 8),
            ('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', 8),
            ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}', 8),
            ('{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}', 8),
            ('{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', 8),
            ('{"a":{"dtype":"F32","data_offsets":[0,8]}}', 8),
            ('{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}', 8),
            ('{"a":{"dtype":"F16","shape":[],"data_offsets":[0,2]},'
             '"z":{"dtype":"F8_E4M3","shape":[0,7],"data_offsets":[2,2]}}', 2),
            ('{"__metadata__":[1]}', 0),
            ('{"empty":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},'
             '"one":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4),
            ('[]', 0)]):
        write("safetensors", "unit-bad-%d.safetensors" % i, build(header, data))
        unframed("unit-bad-%d.unframed" % i, build(header, data))
    unframed("unit-good.unframed", good)
    big = bytearray(16)
    big[:8] = struct.pack("<Q", 1000)
    write("safetensors", "unit-header-past-end.safetensors", bytes(big))


# ---------------------------------------------------------------------------------------------
# Tokenizer texts.

def tokenizer_seeds():
    texts = []
    inp = read(os.path.join(TESTDATA, "vocab", "ggml-vocab-llama-spm.gguf.inp")).decode()
    texts += inp.split("\n__ggml_vocab_test__\n")[:-1]
    # Lines cut to 200 characters: long inputs only slow the fuzzer down (it makes its own).
    with open(WIKITEXT, encoding="utf-8") as f:
        texts += [line[:200] for line in f.read().split("\n") if line.strip()][:200:20]
    with open(os.path.join(TESTDATA, "text", "tinystories_validation_head.txt"),
              encoding="utf-8") as f:
        texts += [line[:200] for line in f.read().split("\n") if line.strip()][:50:10]
    texts += [
        "def f(x):\n    return {'a': [1, 2, 3]}  # ok\n\tif x >= 10_000: pass\r\n",
        "😀😁👍🏽 👨‍👩‍👧‍👦 🇫🇷 ✅✅", "中文字符和日本語のテキスト、한국어 텍스트。",
        "Привет, мир! Γειά σου Κόσμε! مرحبا بالعالم ١٢٣ नमस्ते दुनिया ４５６",
        "\n\n\n\t\t  \u3000\u00a0\u2028x\x0by\x85z", "I'M you'RE they'Ve WE'LL it'S ſ 'Ｓ",
        "½ ¾ ² ³ ⅷ ١٢٣٤٥ 1234567 3.14159", "ﬁﬂ Å Å é é Ǆ ǅ ǆ ÀÉÎÕÜ straße İstanbul ΣΑΣ",
        "<s> </s> <unk> <|start_story|>Once<|end_story|> <|endoftext|> <｜begin▁of▁sentence｜>",
    ]
    seen = set()
    for i, t in enumerate(texts):
        if t in seen:
            continue
        seen.add(t)
        write("tokenizer", "text-%03d" % i, t)
    for i, b in enumerate([b"\xff\xfe", b"a\xc3", b"\xe2\x82", b"\xed\xa0\x80x", b"\xf4\x90\x80\x80",
                           b"\xc0\xaf", b"ok \x80 ok", b"\0\0\0"]):
        write("tokenizer", "invalid-utf8-%d" % i, b)


# ---------------------------------------------------------------------------------------------
# Requests: protobuf's wire format by hand (superweight.proto's field numbers).

def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(number, value, kind=None):
    """kind: None picks by type; 'f' float32, 'd' double, 'packed' repeated int32."""
    if kind == "f":
        return varint(number << 3 | 5) + struct.pack("<f", value)
    if kind == "d":
        return varint(number << 3 | 1) + struct.pack("<d", value)
    if kind == "packed":
        body = b"".join(varint(v) for v in value)
        return varint(number << 3 | 2) + varint(len(body)) + body
    if isinstance(value, bool) or isinstance(value, int):
        return varint(number << 3) + varint(int(value))
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


RPC = {"locate": 0, "score": 1, "ablate": 2, "quantize": 3, "check": 4, "get_job": 5,
       "cancel_job": 6, "list_jobs": 7, "recipe": 8}
HF, NOTOK, L2C = "hf_tinystories_656k", "notok", "stories260K/stories260K.bin"
GGUF = "smollm2-tiny.gguf"  # request_fuzzer copies seed-smollm2-tiny-q4_1.gguf under that name


def request(rpc, name, *fields):
    write("request", "%s-%s" % (rpc, name), bytes([RPC[rpc]]) + b"".join(fields))


def text_input(t):
    return field(1, t)


def ids_input(ids):
    return field(2, field(1, ids, "packed"))


def coordinate(layer, row, col):
    return field(1, layer) + field(2, row) + field(3, col)


def setting(bits=4, block=0, clip="", clip_value=None, restore=False, full=False, act_bits=0,
            hold_out=False, hold_largest=0):
    s = field(1, True) if full else b""
    s += field(2, bits) + field(3, block) if bits or block else b""
    s += field(4, clip) if clip else b""
    s += field(5, clip_value, "d") if clip_value is not None else b""
    s += field(6, True) if restore else b""
    s += field(7, act_bits) if act_bits else b""
    s += field(8, True) if hold_out else b""
    s += field(9, hold_largest) if hold_largest else b""
    return s


def request_seeds():
    for model in (HF, NOTOK, L2C, GGUF, "missing", "../testdata", "/etc",
                  "stories260K/tok512.bin"):
        request("locate", "model-" + model.replace("/", "_").replace(".", "_"), field(1, model))
    request("locate", "text", field(1, HF), field(2, text_input("Once upon a time there was")),
            field(3, 5.0, "f"), field(4, 2.0, "f"), field(5, 3), field(6, 2), field(8, 1.2, "f"))
    request("locate", "ids-skip", field(1, L2C), field(2, ids_input([1, 403, 407, 261])),
            field(9, True), field(10, True))
    request("locate", "confirm-text", field(1, HF), field(7, "The little dog ran home. " * 4))
    request("locate", "negative", field(1, HF), field(3, -1.0, "f"), field(5, -2))
    request("locate", "nan", field(1, HF), field(4, float("nan"), "f"))
    request("locate", "ids-out-of-range", field(1, HF), field(2, ids_input([1, 2048, -1])))
    request("score", "text", field(1, HF), field(2, text_input("One day, a little girl")))
    request("score", "ids-edits", field(1, L2C), field(2, ids_input([1, 403, 407, 261, 378])),
            field(3, field(1, field(1, coordinate(0, 3, 5)) + field(2, 0.0, "f")) +
                  field(2, field(1, 0) + field(2, 1) + field(3, 7) + field(4, 2.5, "f"))),
            field(4, 2))
    request("score", "window", field(1, HF), field(2, text_input("word " * 200)), field(5, 16),
            field(6, 3))
    request("score", "window-one", field(1, HF), field(2, text_input("a b")), field(5, 1))
    request("score", "edit-outside", field(1, HF), field(2, ids_input([1, 2, 3])),
            field(3, field(1, field(1, coordinate(9, 999, 999)))))
    request("score", "no-tokenizer", field(1, NOTOK), field(2, text_input("text")))
    request("score", "one-token", field(1, HF), field(2, ids_input([1])))
    request("ablate", "defaults", field(1, HF))
    request("ablate", "named", field(1, HF), field(3, coordinate(1, 2, 3)),
            field(4, 0.5, "f") + field(4, 2.0, "f"), field(5, 0.001, "d"),
            field(6, "wikitext2") + field(6, "piqa") + field(6, "hellaswag"), field(7, 2),
            field(9, "prune") + field(9, "scale") + field(9, "token_probs"), field(10, 8),
            field(11, 2), field(13, 3))
    request("ablate", "tasks", field(1, L2C), field(3, coordinate(0, 0, 0)),
            b"".join(field(6, t) for t in ("arc_easy", "arc_challenge", "winogrande", "sciq",
                                           "lambada")), field(9, "outliers"),
            field(9, "restore_sa"))
    request("ablate", "bad-setting", field(1, HF), field(9, "sideways"))
    request("ablate", "bad-outlier-fraction", field(1, HF), field(5, 1.5, "d"))
    request("ablate", "bad-task", field(1, HF), field(6, "mmlu"), field(3, coordinate(0, 0, 0)))
    request("ablate", "no-tokenizer", field(1, NOTOK), field(3, coordinate(0, 0, 0)))
    request("quantize", "defaults", field(1, HF))
    request("quantize", "settings", field(1, HF),
            field(10, setting(4, 64, "z", 3.0, restore=True)) +
            field(10, setting(8, -1, "block_top")) + field(10, setting(3, 0, "tensor_top")) +
            field(10, setting(full=True, act_bits=8, hold_out=True)) +
            field(10, setting(4, 32, act_bits=8, hold_largest=4)),
            field(11, coordinate(1, 5, 9)), field(8, "wikitext2"), field(13, 4), field(14, 1),
            field(16, True))
    request("quantize", "export-hf", field(1, HF), field(10, setting(4, 32)),
            field(11, coordinate(0, 1, 1)), field(8, "wikitext2"), field(17, "hf:f32"),
            field(18, "tiny-int4"))
    request("quantize", "export-gguf", field(1, L2C), field(10, setting(4, 32)),
            field(11, coordinate(0, 1, 1)), field(8, "piqa"), field(17, "gguf:Q4_K"),
            field(18, "x.gguf"), field(19, "Q8_0"))
    request("quantize", "export-gguf-tiny", field(1, GGUF), field(10, setting(4, 32, "z", 9.0,
                                                                               restore=True)),
            field(11, coordinate(0, 1, 1)), field(8, "wikitext2"), field(17, "gguf:Q4_0"),
            field(18, "tiny-q4_0.gguf"), field(19, "F16"))
    request("quantize", "export-gguf-bad-type", field(1, GGUF), field(10, setting(4, 32)),
            field(11, coordinate(0, 1, 1)), field(8, "wikitext2"), field(17, "gguf:Q2_K"),
            field(18, "x.gguf"))
    request("quantize", "export-mix", field(1, GGUF), field(10, setting(4, 32)),
            field(11, coordinate(0, 1, 1)), field(8, "none"), field(17, "gguf:mix:Q3_K_M"),
            field(18, "x.gguf"))
    request("quantize", "export-bad-name", field(1, HF), field(10, setting(4, 32)),
            field(8, "wikitext2"), field(17, "hf"), field(18, "../escape"))
    request("quantize", "bad-setting", field(1, HF), field(10, setting(9, 7, "zz", -1.0)))
    request("quantize", "bad-hold-largest", field(1, HF),
            field(10, setting(4, 32, act_bits=8, hold_largest=65)))
    request("check", "defaults", field(1, HF), field(2, HF))
    request("check", "bounds", field(1, L2C), field(2, L2C), field(3, coordinate(0, 1, 2)),
            field(4, 0.1, "d"), field(5, 0.3, "d"), field(6, 1.5, "d"), field(7, 16), field(8, 2),
            field(9, 2))
    request("check", "negative", field(1, HF), field(2, HF), field(4, -1.0, "d"))
    request("check", "no-tokenizer", field(1, HF), field(2, NOTOK))
    request("check", "gguf", field(1, GGUF), field(2, GGUF), field(3, coordinate(0, 3, 4)))
    request("recipe", "gguf", field(1, GGUF), field(2, "Q4_K_M"), field(3, coordinate(0, 3, 4)),
            field(5, 16), field(6, 1), field(10, "out.gguf"))
    request("recipe", "bounds", field(1, GGUF), field(2, "q2_k"), field(4, 0.5, "d"))
    request("recipe", "bad-type", field(1, GGUF), field(2, "IQ1_S"), field(4, -1.0, "d"))
    request("recipe", "not-gguf", field(1, HF), field(2, "Q4_K_M"))
    for rpc in ("get_job", "cancel_job"):
        for name, job_id in (("well-formed", b"job-000001"), ("malformed", b"job-x\xff"),
                             ("long", b"job-" + b"9" * 40)):
            request(rpc, name, field(1, job_id))
    request("list_jobs", "all", b"")
    request("list_jobs", "model-limit", field(1, HF), field(2, 5))
    request("list_jobs", "negative", field(2, -1))


def main():
    gguf_seeds()
    gguf_family_seeds()
    hf_seeds()
    safetensors_seeds()
    tokenizer_seeds()
    request_seeds()
    for fuzzer in sorted({f for f, _ in written}):
        files = [n for f, n in written if f == fuzzer]
        total = sum(written[(fuzzer, n)] for n in files)
        print("%-12s %3d seeds, %7d bytes" % (fuzzer, len(files), total))
    # Stale seeds (a case renamed or dropped) go; reproducers and other files stay.
    for fuzzer in sorted(os.listdir(OUT)):
        for name in sorted(os.listdir(os.path.join(OUT, fuzzer))):
            if name.startswith("seed-") and (fuzzer, name[len("seed-"):]) not in written:
                os.remove(os.path.join(OUT, fuzzer, name))


if __name__ == "__main__":
    sys.exit(main())
