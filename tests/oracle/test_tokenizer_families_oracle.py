"""The engine's tokenizer.json support against the `tokenizers` library itself.

Small BPE models are trained on WikiText-2 with `tokenizers.trainers.BpeTrainer`, each with
the pre-tokenizer, normalizer, decoder and added tokens of a model family (GPT-2, Llama 3,
Qwen2, DeepSeek LLM, a Sequence of several, SentencePiece-style with and without byte
fallback), saved as tokenizer.json, and the engine's ids and decoded text are compared with the
library's on a multilingual corpus: llama.cpp's test strings, WikiText-2 lines, code, emoji,
CJK, mixed scripts, whitespace runs. transformers' GGUF tokenizer conversion is compared on
llama.cpp's vocabulary-only GGUFs where it supports them.
"""
import glob
import json
import os
import subprocess

import pytest

from conftest import ENGINE, TESTDATA, WIKITEXT, engine

VOCAB = os.path.join(TESTDATA, "vocab")

# Regexes of the families' tokenizer.json files (facts of those files).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Non-ASCII characters as \x{...}: an editor that normalizes to NFC would break the ranges.
DEEPSEEK_PATTERNS = [
    r"[\r\n]",
    r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+",
    r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+",
    r"\s+$",
    r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
    r"\p{N}+",
]


def _corpus():
    texts = []
    for inp in sorted(glob.glob(os.path.join(VOCAB, "*.inp"))):
        with open(inp, encoding="utf-8") as f:
            texts += f.read().split("\n__ggml_vocab_test__\n")[:-1]
    with open(WIKITEXT, encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    texts += lines[:400:4]
    texts += [
        "def f(x):\n    return {'a': [1, 2, 3]}  # ok\n\tif x >= 10_000: pass\r\n",
        "int main() { printf(\"%d\\n\", 42); return 0; }",
        "😀😁👍🏽 👨‍👩‍👧‍👦 🇫🇷 ✅✅", "中文字符和日本語のテキスト、한국어 텍스트。",
        "Привет, мир! Γειά σου Κόσμε! مرحبا بالعالم ١٢٣ नमस्ते दुनिया ４５６",
        "   leading and trailing   ", "\n\n\n\t\t  \u3000\u00a0\u2028x\x0by\x85z",
        "I'M you'RE they'Ve WE'LL it'S ſ 'Ｓ", "½ ¾ ² ³ ⅷ ١٢٣٤٥ 1234567 3.14159",
        "ﬁﬂ Å Å é é Ǆ ǅ ǆ ÀÉÎÕÜ straße İstanbul ΣΑΣ", "a" * 300, " " * 17 + "b",
    ]
    return [t for t in dict.fromkeys(texts)]


CORPUS = _corpus()


@pytest.fixture(scope="module")
def training_text():
    with open(WIKITEXT, encoding="utf-8") as f:
        lines = f.read().split("\n")
    return lines + CORPUS[:50]


def _train(tok, training_text, vocab_size=3000, special=(), **trainer_args):
    from tokenizers import trainers
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special),
                                  show_progress=False, **trainer_args)
    tok.train_from_iterator(training_text, trainer)
    return tok


def _byte_level(pre, training_text, normalizer=None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    return _train(tok, training_text, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                  special=["<|endoftext|>"])


def _sentencepiece(training_text, byte_fallback):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=byte_fallback, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    special = ["<unk>", "<s>", "</s>"] + ([f"<0x{b:02X}>" for b in range(256)] if byte_fallback else [])
    # A small alphabet, so that rarer characters take the fallback (bytes, or <unk>).
    return _train(tok, training_text, special=special, limit_alphabet=120)


def _families(training_text):
    from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    fams = {
        "gpt2": _byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False), training_text),
        "llama3": _byte_level(pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(LLAMA3_PATTERN), "isolated"), byte_level]), training_text),
        "qwen2": _byte_level(pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(QWEN2_PATTERN), "isolated"), byte_level]), training_text,
            normalizer=normalizers.NFC()),
        "deepseek-llm": _byte_level(pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(p), "isolated") for p in DEEPSEEK_PATTERNS] + [byte_level]),
            training_text),
        "sequence": _byte_level(pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(" ", "merged_with_next"),
            pre_tokenizers.Punctuation("contiguous"),
            pre_tokenizers.Digits(individual_digits=False),
            pre_tokenizers.Split(Regex(r"[aeiou]"), "merged_with_previous", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False)]), training_text,
            normalizer=normalizers.Sequence([
                normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip(),
                normalizers.Replace(Regex(r"\s+"), " "), normalizers.StripAccents()])),
        "spm-byte-fallback": _sentencepiece(training_text, byte_fallback=True),
        "spm-unk": _sentencepiece(training_text, byte_fallback=False),
    }
    # Added tokens: special ones (parsed only when asked), a plain one matched in any text,
    # lstrip/rstrip, and one matched in the normalized text.
    for tok in fams.values():
        tok.add_special_tokens(["<|im_start|>", "<|im_end|>",
                                AddedToken("<mask>", lstrip=True, rstrip=True, special=True)])
        tok.add_tokens([AddedToken("[USER]", normalized=False, special=False),
                        AddedToken("Hello", normalized=True, special=False)])
    return fams


@pytest.fixture(scope="module")
def families(training_text, tmp_path_factory):
    out = {}
    for name, tok in _families(training_text).items():
        path = str(tmp_path_factory.mktemp(name) / "tokenizer.json")
        tok.save(path)
        if name == "llama3":  # Llama 3's file takes a word that is a piece whole
            with open(path, encoding="utf-8") as f:
                j = json.load(f)
            j["model"]["ignore_merges"] = True
            with open(path, "w", encoding="utf-8") as f:
                json.dump(j, f)
        from tokenizers import Tokenizer
        out[name] = (Tokenizer.from_file(path), path)
    return out


def _engine_batch(path, texts, tmp_path, **flags):
    texts_file = os.path.join(str(tmp_path), "texts.json")
    with open(texts_file, "w", encoding="utf-8") as f:
        json.dump(texts, f)
    return engine("tokenize", path, texts_json=texts_file, bos=0, **flags)


SPECIAL_TEXTS = ["<|im_start|>user\nhi [USER] there<|im_end|>", "a  <mask>  b<mask>c",
                 "Hello world, hello Hello", "x[USER]y <|im_end|><|im_end|>"]

FAMILIES = ["gpt2", "llama3", "qwen2", "deepseek-llm", "sequence", "spm-byte-fallback", "spm-unk"]


@pytest.mark.parametrize("name", FAMILIES)
def test_ids_and_text_equal_tokenizers(name, families, tmp_path):
    tok, path = families[name]
    texts = CORPUS + SPECIAL_TEXTS
    # User text: special tokens written in it are text (the library's encode_special_tokens).
    tok.encode_special_tokens = True
    want = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    got = _engine_batch(path, texts, tmp_path)
    for text, w, g in zip(texts, want, got["ids"]):
        assert g == w, f"{name}: {text!r}"
    for ids, decoded in zip(want, got["decoded"]):
        assert decoded == tok.decode(ids, skip_special_tokens=False), f"{name}: {ids}"
    assert sum(map(len, want)) > 5000


@pytest.mark.parametrize("name", FAMILIES)
def test_special_tokens_parsed_when_asked(name, families, tmp_path):
    tok, path = families[name]
    tok.encode_special_tokens = False
    want = [tok.encode(t, add_special_tokens=False).ids for t in SPECIAL_TEXTS]
    got = _engine_batch(path, SPECIAL_TEXTS, tmp_path, parse_special=1)
    assert got["ids"] == want
    specials = {tok.token_to_id(t) for t in ("<|im_start|>", "<|im_end|>", "<mask>")}
    assert all(specials & set(ids) for ids in want[:2])


@pytest.mark.parametrize("name", ["gpt2", "spm-byte-fallback"])
def test_decoding_arbitrary_ids_equals_tokenizers(name, families):
    # Ids that need not come from any text: partial UTF-8 sequences, added tokens mid-word.
    import random
    tok, path = families[name]
    rng = random.Random(7)
    n = tok.get_vocab_size()
    for _ in range(40):
        ids = [rng.randrange(n) for _ in range(rng.randrange(1, 12))]
        got = engine("detokenize", path, ids=",".join(map(str, ids)))["text"]
        assert got == tok.decode(ids, skip_special_tokens=False), ids


def test_invalid_utf8_refused(families, tmp_path):
    _, path = families["gpt2"]
    bad = os.path.join(str(tmp_path), "bad.txt")
    with open(bad, "wb") as f:
        f.write(b"valid start \xe4\xb8 then broken")
    out = subprocess.run([ENGINE, "tokenize", path, f"--text_file={bad}"], capture_output=True)
    assert out.returncode != 0
    assert b"not valid UTF-8" in out.stderr and b"offset 12" in out.stderr


def test_unknown_component_refused_by_name(families, tmp_path):
    _, path = families["gpt2"]
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    j["pre_tokenizer"] = {"type": "UnicodeScripts"}
    bad = os.path.join(str(tmp_path), "tokenizer.json")
    with open(bad, "w", encoding="utf-8") as f:
        json.dump(j, f)
    out = subprocess.run([ENGINE, "tokenize", bad, "--text=hi"], capture_output=True, text=True)
    assert out.returncode != 0 and "UnicodeScripts" in out.stderr


# transformers (4.46) converts a GGUF's tokenizer for some architectures only, and of these
# vocabularies builds the right pipeline for two: for phi-3 it leaves out the SentencePiece
# normalizer ("Hello world" -> H/ellow/orld), for deepseek-llm it uses the GPT-2 regex
# instead of DeepSeek's, and it refuses falcon. llama.cpp's own vectors cover all five in the
# unit tests.
@pytest.mark.parametrize("name", ["gpt-2", "llama-spm"])
def test_transformers_gguf_conversion_agrees(name, tmp_path):
    from transformers import AutoTokenizer
    gguf = os.path.join(VOCAB, f"ggml-vocab-{name}.gguf")
    tok = AutoTokenizer.from_pretrained(VOCAB, gguf_file=os.path.basename(gguf))
    texts = CORPUS
    fast = tok.backend_tokenizer
    fast.encode_special_tokens = True
    want = [fast.encode(t, add_special_tokens=False).ids for t in texts]
    got = _engine_batch(gguf, texts, tmp_path)["ids"]
    mismatched = [t for t, w, g in zip(texts, want, got) if w != g]
    assert not mismatched, f"{len(mismatched)} of {len(texts)} differ, first {mismatched[0]!r}"
