"""Perplexity over non-overlapping windows, against transformers on the same token stream."""
import math

import numpy as np
import pytest

from conftest import SMOLLM2, STORIES260K, TINYSTORIES, TINYSTORIES_TEXT, WIKITEXT, engine

CASES = [
    # model, text, window, windows compared (a prefix of the text keeps the suite's time sane)
    (SMOLLM2, WIKITEXT, 512, 6),
    (TINYSTORIES, TINYSTORIES_TEXT, 256, 48),
    (STORIES260K, TINYSTORIES_TEXT, 256, 48),
]


def _hf_perplexity(hf, ids, window, windows, torch):
    nll, count = 0.0, 0
    with torch.no_grad():
        for w in range(windows):
            chunk = torch.tensor([ids[w * window:(w + 1) * window]])
            logits = hf(chunk).logits[0].double()
            lp = torch.log_softmax(logits[:-1], -1).gather(1, chunk[0, 1:, None])[:, 0]
            nll -= float(lp.sum())
            count += window - 1
    return math.exp(nll / count), count


@pytest.mark.parametrize("model,text,window,windows", CASES,
                         ids=["smollm2-wikitext2", "tinystories656k", "stories260k"])
@pytest.mark.isa
def test_perplexity_within_0_1_percent(model, text, window, windows, hf_models, torch):
    ids = engine("tokenize", model, text_file=text)["ids"]
    want, count = _hf_perplexity(hf_models(model), ids, window, windows, torch)
    got = engine("perplexity", model, text_file=text, window=window, max_windows=windows)
    print(f"perplexity engine {got['perplexity']:.4f} transformers {want:.4f}")
    assert got["tokens_scored"] == count
    assert abs(got["perplexity"] - want) / want < 1e-3
