"""Token ids equal the `tokenizers` library's on the whole WikiText-2 test text."""
import os

import pytest

from conftest import SMOLLM2, STORIES260K, TINYSTORIES, WIKITEXT, engine


def _wikitext():
    with open(WIKITEXT, encoding="utf-8") as f:
        return f.read()


def test_tinystories_656k_ids_equal_tokenizers():
    from tokenizers import Tokenizer
    want = Tokenizer.from_file(os.path.join(TINYSTORIES, "tokenizer.json")).encode(_wikitext()).ids
    got = engine("tokenize", TINYSTORIES, text_file=WIKITEXT)["ids"]
    assert len(want) > 100000
    assert got == want


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(os.path.dirname(SMOLLM2), gguf_file=os.path.basename(SMOLLM2))
    # transformers' GGUF conversion drops the digit split of `smollm`; SmolLM2's own
    # tokenizer.json (and llama.cpp) isolate every numeric character, "½" and "١" included.
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return tok


def test_smollm2_gguf_ids_equal_tokenizers(smollm2_tokenizer):
    tok = smollm2_tokenizer
    # The GGUF says add_bos_token = false; transformers' converted tokenizer would add one.
    want = tok.backend_tokenizer.encode(_wikitext(), add_special_tokens=False).ids
    got = engine("tokenize", SMOLLM2, text_file=WIKITEXT)["ids"]
    assert len(want) > 100000
    assert got == want


def test_stories260k_ids_equal_tokenizers(stories260k_hf):
    from tokenizers import Tokenizer
    want = Tokenizer.from_file(os.path.join(stories260k_hf, "tokenizer.json")).encode(_wikitext()).ids
    got = engine("tokenize", STORIES260K, text_file=WIKITEXT)["ids"]
    assert got == want


@pytest.mark.parametrize("text", ["", " ", "  leading spaces", "tabs\tand\r\nnewlines\n\n\n",
                                  "ünïcödé ☃ 😀 中文 ١٢٣", "<|im_start|>user\nhi<|im_end|>",
                                  "12345 67.8%", "don't 'Tis WE'LL"])
def test_smollm2_edge_cases(text, smollm2_tokenizer):
    tok = smollm2_tokenizer
    want = tok.backend_tokenizer.encode(text, add_special_tokens=False).ids
    # `tokenizers` matches special tokens written in the text; the engine does when asked.
    got = engine("tokenize", SMOLLM2, text=text, parse_special=1)["ids"] if text else []
    assert got == want
