"""Tokenizer benchmark: the engine's tokenizer against Hugging Face `tokenizers`, same text
(the whole WikiText-2 test split as one string), one thread, same vocabularies.

Cases, each with the same vocabulary and merges on both sides (the HF side is transformers'
conversion of the GGUF, its pre-tokenizer set to the family's where the conversion lacks it):
  gpt-2          GGUF gpt-2: the hand-written GPT-2 splitter in the engine
  gpt-2 on ICU   the same vocabulary from a tokenizer.json whose Split holds the GPT-2 regex in
                 a group, so the engine runs it on ICU: what the hand-written splitter saves
  llama-3 regex  the same vocabulary with Llama 3's pre-tokenizer regex (ICU)
  deepseek-llm   GGUF deepseek-llm: six regexes in sequence (ICU)
The engine is timed in-process around Tokenize (tokenize --timing; the load is apart), the
library around Tokenizer.encode; best of 3 each. Ids are checked equal (the GGUF's
user-defined tokens, which transformers' conversion drops, are added to the library's side). The CPU model is
printed (lscpu).

    .venv/bin/python bench/tokenizer_bench.py
"""
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))
from test_tokenizer_families_oracle import DEEPSEEK_PATTERNS, GPT2_PATTERN, LLAMA3_PATTERN  # noqa: E402

ENGINE = os.path.join(ROOT, "build", "bin", "superweight-engine")
VOCAB = os.path.join(ROOT, "testdata", "vocab")
WIKITEXT = os.path.join(ROOT, "testdata", "text", "wiki.test.raw")
ROUNDS = 3


def cpu_model():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def hf_from_gguf(name, pre=None):
    import gguf
    from tokenizers import AddedToken
    from transformers import AutoTokenizer
    path = os.path.join(VOCAB, f"ggml-vocab-{name}.gguf")
    tok = AutoTokenizer.from_pretrained(VOCAB, gguf_file=os.path.basename(path)).backend_tokenizer
    if pre is not None:
        tok.pre_tokenizer = pre
    # The conversion drops user-defined tokens (type 4), which llama.cpp matches before the
    # split (DeepSeek's "ü", ...): added back as plain added tokens.
    fields = gguf.GGUFReader(path).fields
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    user = [bytes(tokens.parts[tokens.data[i]]).decode() for i in range(len(tokens.data))
            if int(types.parts[types.data[i]][0]) == 4]
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])
    return tok


def time_engine(path, text_file):
    best, ids = float("inf"), None
    for _ in range(ROUNDS):
        out = subprocess.run([ENGINE, "tokenize", path, f"--text_file={text_file}", "--bos=0",
                              "--timing"], capture_output=True, text=True, check=True)
        j = json.loads(out.stdout)
        best, ids = min(best, j["timing"]["encode_ms"] / 1e3), j["ids"]
    return best, ids


def time_hf(tok, text):
    best, ids = float("inf"), None
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        enc = tok.encode(text, add_special_tokens=False)
        best, ids = min(best, time.perf_counter() - t0), enc.ids
    return best, ids


def main():
    from tokenizers import Regex, pre_tokenizers
    with open(WIKITEXT, encoding="utf-8") as f:
        text = f.read()
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tmp = tempfile.mkdtemp(prefix="tokbench")
    cases = []
    gpt2 = hf_from_gguf("gpt-2")
    cases.append(("gpt-2 (hand-written split)", os.path.join(VOCAB, "ggml-vocab-gpt-2.gguf"), gpt2))
    for label, pattern in [("gpt-2 regex on ICU", "(?:" + GPT2_PATTERN + ")"),
                           ("llama-3 regex on ICU", LLAMA3_PATTERN)]:
        tok = hf_from_gguf("gpt-2", pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(pattern), "isolated"), byte_level]))
        path = os.path.join(tmp, label.split()[0] + label.split()[1] + ".json")
        tok.save(path)
        cases.append((label, path, tok))
    deepseek = hf_from_gguf("deepseek-llm", pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(p), "isolated") for p in DEEPSEEK_PATTERNS] + [byte_level]))
    cases.append(("deepseek-llm (6 regexes on ICU)",
                  os.path.join(VOCAB, "ggml-vocab-deepseek-llm.gguf"), deepseek))
    print(f"CPU: {cpu_model()}; one thread; WikiText-2 test, {len(text.encode())} bytes")
    print(f"{'case':34s} {'tokens':>8s} {'engine tok/s':>13s} {'tokenizers tok/s':>17s} "
          f"{'ratio':>6s} ids")
    for label, path, tok in cases:
        engine_s, engine_ids = time_engine(path, WIKITEXT)
        hf_s, hf_ids = time_hf(tok, text)
        n = len(hf_ids)
        print(f"{label:34s} {n:8d} {n / engine_s:13.0f} {n / hf_s:17.0f} "
              f"{hf_s / engine_s:6.2f} {'equal' if engine_ids == hf_ids else 'DIFFER'}")


if __name__ == "__main__":
    main()
