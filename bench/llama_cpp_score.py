"""The llama.cpp side of the scoring benchmark (llama-cpp-python, built from source with the
machine's native flags, in the bench environment): scores random 512-token sequences of the
same GGUF file as superweight-bench-score and hf_score.py score (same length, same token range),
every position's log-probability of the next token, one sequence per line of stdin, printing a
JSON line for each, as hf_score.py --serve does."""
import json
import os
import sys
import time

import numpy as np


def main():
    path, tokens, sequences, threads = sys.argv[1], *map(int, sys.argv[2:5])
    import llama_cpp
    from llama_cpp import Llama
    if os.environ.get("BENCH_LLAMA_EXTRA_BUFTS") != "1":
        # llama.cpp's extra buffer types (its AMX matmul, and weight repacking) off by default:
        # its AMX Q4_1 matmul crashes (SIGSEGV in ggml_backend_amx_mul_mat) on the Sapphire
        # Rapids machines here; its AVX-512/AVX2 vec_dot kernels serve instead.
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
        from llama_cpp_eval import without_extra_bufts
        without_extra_bufts()
    llm = Llama(model_path=path, n_ctx=tokens, n_batch=tokens, n_ubatch=tokens, n_threads=threads,
                n_threads_batch=threads, logits_all=True, verbose=False)
    vocab = llm.n_vocab()
    ids = np.random.default_rng(42).integers(3, vocab, (sequences, tokens)).tolist()

    decode_seconds = []

    def score(seq):
        llm.reset()
        t0 = time.time()
        llm.eval(seq)  # the forward pass, every position's logits copied out
        decode_seconds.append(time.time() - t0)
        logits = llm.scores[: len(seq) - 1]
        shift = logits.max(axis=1, keepdims=True)
        lse = shift[:, 0] + np.log(np.exp(logits - shift).sum(axis=1))
        return logits[np.arange(len(seq) - 1), seq[1:]] - lse

    score(ids[0])  # warm-up
    print(json.dumps({"ready": True}), flush=True)
    seconds, scored = 0.0, 0
    for _ in sys.stdin:
        t0 = time.time()
        score(ids[scored % sequences])
        seconds += time.time() - t0
        scored += 1
        print(json.dumps({"seconds": time.time() - t0, "decode_seconds": decode_seconds[-1]}),
              flush=True)
    print(json.dumps({"tokens_per_s": tokens * scored / max(seconds, 1e-9), "seconds": seconds,
                      "llama_cpp": llama_cpp.__version__, "threads": threads,
                      "extra_bufts": os.environ.get("BENCH_LLAMA_EXTRA_BUFTS") == "1",
                      "system_info": llama_cpp.llama_print_system_info().decode()[:300]}))


if __name__ == "__main__":
    main()
