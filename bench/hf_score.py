"""The transformers side of the scoring benchmark: scores random 512-token sequences and prints
one JSON line. Run by score_throughput.py in its own process, with the same thread count; with
--serve, one sequence per line of stdin, for paired runs against the engine."""
import json
import os
import sys
import time

import torch


def main():
    path, precision, tokens, sequences, threads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    torch.set_num_threads(threads)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "oracle"))
    from conftest import _load_hf
    model = _load_hf(path, torch)
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    blas = "unknown"
    try:
        import ctypes
        lib = ctypes.CDLL("libblas.so.3")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        blas = "OpenBLAS " + lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        pass
    g = torch.Generator().manual_seed(42)
    ids = torch.randint(3, model.config.vocab_size, (sequences, tokens), generator=g)

    def score(seq):
        with torch.no_grad():
            logits = model(seq[None]).logits[0, :-1].float()
            return torch.log_softmax(logits, -1).gather(1, seq[1:, None])

    score(ids[0])  # warm-up
    seconds, scored = 0.0, 0
    if "--serve" in sys.argv:
        # Paired benchmarking, as superweight-bench-score --serve: a sequence per stdin line.
        print(json.dumps({"ready": True}), flush=True)
        for _ in sys.stdin:
            t0 = time.time()
            score(ids[scored % sequences])
            seconds += time.time() - t0
            scored += 1
            print(json.dumps({"seconds": time.time() - t0}), flush=True)
    else:
        t0 = time.time()
        for s in range(sequences):
            score(ids[s])
        seconds, scored = time.time() - t0, sequences
    print(json.dumps({"tokens_per_s": tokens * scored / seconds, "seconds": seconds,
                      "blas": blas, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
