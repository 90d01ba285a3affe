#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python, .venv-bench) on a GGUF file: the second peer of the oracle tests.

  llama_cpp_eval.py logits MODEL.gguf IDS OUT.npy [--kv=f32|f16]
      every position's logits of the comma-separated token ids, float32 [tokens, vocab]
  llama_cpp_eval.py perplexity MODEL.gguf IDS_FILE [--kv=f32|f16]
      prints {"perplexity": ..., "tokens": ...}: exp of the mean negative log-likelihood of
      each next token of one sequence (IDS_FILE: token ids, separated by commas or whitespace;
      "tokens" counts the predicted ones, len(ids) - 1)
  llama_cpp_eval.py tokenize MODEL.gguf TEXT_FILE
      prints {"ids": [...]}: llama.cpp's tokens of the file's text (UTF-8), BOS first where the
      file says to add it
  llama_cpp_eval.py quantize SRC.gguf DST.gguf TYPE
      llama_model_quantize to TYPE (Q8_0, Q4_0, Q4_K, F16, ...; every tensor it converts in that
      type, as tests/oracle/test_ggml_quantizers.py does: pure, requantizing allowed)

Run with .venv-bench/bin/python (tools/setup-bench.sh). As bench/llama_cpp_score.py, llama.cpp's
extra buffer types are off (its AMX matmul crashes on some machines here); 2 threads, or
OMP_NUM_THREADS (make's parallel test workers give each one). The KV cache is f32 unless
--kv=f16 (llama.cpp's default): on an f32 file of the families without GELU its logits are then
those of a float64 forward pass within about 2e-6 (relative to the largest), against about 2e-3
with an f16 cache; the Gemmas' are within about 3e-4 either way (ggml's GELU goes through an
f16 table).
"""
import ctypes
import json
import os
import sys

import numpy as np

# llama_ftype of each TYPE (LLAMA_FTYPE_MOSTLY_*); a K type is its small (S) mix, pure.
FTYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9,
          "Q2_K": 10, "Q3_K": 11, "Q4_K": 14, "Q5_K": 16, "Q6_K": 18, "BF16": 32}
THREADS = int(os.environ.get("OMP_NUM_THREADS") or 2)


def without_extra_bufts():
    """llama.cpp's extra buffer types (its AMX matmul, weight repacking) off for every model
    loaded after: its AMX Q4_1 matmul crashes on some machines here."""
    import llama_cpp.llama_cpp as binding
    default_params = binding.llama_model_default_params

    def params():
        p = default_params()
        p.use_extra_bufts = False
        return p
    binding.llama_model_default_params = params


def _parse_ids(text):
    return [int(t) for t in text.replace(",", " ").split()]


KV_TYPES = {"f32": 0, "f16": 1}  # ggml_type


def logits(model, ids, kv="f32"):
    """[tokens, vocab] float32 logits of every position."""
    without_extra_bufts()
    from llama_cpp import Llama
    n = max(len(ids), 1)
    llm = Llama(model_path=model, n_ctx=n, n_batch=n, n_ubatch=n, logits_all=True,
                n_threads=THREADS, n_threads_batch=THREADS, type_k=KV_TYPES[kv],
                type_v=KV_TYPES[kv], verbose=False)
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)], dtype=np.float32)


def perplexity(model, ids, kv="f32"):
    if len(ids) < 2:
        raise ValueError("perplexity needs at least 2 tokens")
    out = logits(model, ids, kv)[:-1].astype(np.float64)
    shift = out.max(axis=1, keepdims=True)
    logp = out - shift - np.log(np.exp(out - shift).sum(axis=1, keepdims=True))
    nll = -logp[np.arange(len(ids) - 1), ids[1:]]
    return {"perplexity": float(np.exp(nll.mean())), "tokens": len(ids) - 1}


def tokenize(model, text):
    from llama_cpp import Llama
    llm = Llama(model_path=model, vocab_only=True, verbose=False)
    return llm.tokenize(text.encode("utf-8"), add_bos=llm._model.add_bos_token(), special=False)


def quantize(src, dst, qtype):
    import llama_cpp
    if qtype.upper() not in FTYPES:
        raise ValueError(f"type {qtype!r}: one of {', '.join(FTYPES)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype.upper()]
    params.allow_requantize = True
    params.pure = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed ({rc})")


def main(argv):
    kv = "f32"
    if argv and argv[-1].startswith("--kv="):
        kv = argv.pop()[len("--kv="):]
        if kv not in KV_TYPES or argv[:1] not in (["logits"], ["perplexity"]):
            sys.exit(__doc__)
    arity = {"logits": 4, "perplexity": 3, "tokenize": 3, "quantize": 4}
    if not argv or arity.get(argv[0]) != len(argv):
        sys.exit(__doc__)
    verb = argv[0]
    if verb == "logits":
        np.save(argv[3], logits(argv[1], _parse_ids(argv[2]), kv))
    elif verb == "perplexity":
        with open(argv[2]) as fh:
            print(json.dumps(perplexity(argv[1], _parse_ids(fh.read()), kv)))
    elif verb == "tokenize":
        with open(argv[2], encoding="utf-8") as fh:
            print(json.dumps({"ids": tokenize(argv[1], fh.read())}))
    else:
        quantize(argv[1], argv[2], argv[3])


if __name__ == "__main__":
    main(sys.argv[1:])
