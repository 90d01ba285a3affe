"""Logits, greedy continuations and per-token log-probabilities against transformers."""
import numpy as np
import pytest

from conftest import SMOLLM2, STORIES260K, TINYSTORIES, engine, engine_logits, relative_error

MODELS = [SMOLLM2, TINYSTORIES, STORIES260K]
PROMPT = "Apple Inc. is a worldwide tech company. Once upon a time, a little dog"

# The bf16 path rounds activations and weights to bf16 (8 significant bits) before every linear
# layer's matmul, accumulating in f32, and where the CPU has AMX also q, k, v and the attention
# probabilities (head_dim a multiple of 32: SmolLM2 here); against the f32 reference that bounds
# the logits' relative error by this (measured: 4e-3 to 9e-3, with and without bf16 attention).
BF16_BOUND = 3e-2


def _ids(model):
    return engine("tokenize", model, text=PROMPT)["ids"]


def _hf_logits(hf, ids, torch):
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.isa
@pytest.mark.parametrize("model", MODELS, ids=["smollm2", "tinystories656k", "stories260k"])
def test_logits_f32_within_1e4(model, hf_models, torch, tmp_path):
    ids = _ids(model)
    want = _hf_logits(hf_models(model), ids, torch)
    got = engine_logits(model, ids, tmp_path)
    assert got.shape == want.shape
    err = relative_error(got, want)
    print(f"f32 relative logit error {err:.2e}")
    assert err < 1e-4


@pytest.mark.isa
@pytest.mark.parametrize("model", MODELS, ids=["smollm2", "tinystories656k", "stories260k"])
def test_logits_bf16_within_stated_bound(model, hf_models, torch, tmp_path):
    ids = _ids(model)
    want = _hf_logits(hf_models(model), ids, torch)
    got = engine_logits(model, ids, tmp_path, bf16=True)
    err = relative_error(got, want)
    print(f"bf16 relative logit error {err:.2e}")
    assert err < BF16_BOUND
    # Still the same model: the top token agrees at most positions.
    assert np.mean(got.argmax(-1) == want.argmax(-1)) > 0.8


@pytest.mark.isa
@pytest.mark.parametrize("model", MODELS, ids=["smollm2", "tinystories656k", "stories260k"])
def test_greedy_64_tokens_identical(model, hf_models, torch):
    ids = _ids(model)[:8]
    hf = hf_models(model)
    # Greedy decoding by hand: transformers' generate() imports torch.distributed, which Debian's
    # torch 1.13 cannot import under Python 3.11. With a KV cache, as generate() would.
    want = list(ids)
    with torch.no_grad():
        out = hf(torch.tensor([want]), use_cache=True)
        for _ in range(64):
            want.append(int(out.logits[0, -1].argmax()))
            out = hf(torch.tensor([[want[-1]]]), past_key_values=out.past_key_values, use_cache=True)
    got = engine("generate", model, ids=",".join(map(str, ids)), steps=64)["ids"]
    assert got == want


@pytest.mark.isa
@pytest.mark.parametrize("model", MODELS, ids=["smollm2", "tinystories656k", "stories260k"])
def test_token_logprobs_within_0_1_percent(model, hf_models, torch):
    ids = _ids(model)
    with torch.no_grad():
        logits = hf_models(model)(torch.tensor([ids])).logits[0].double()
    want = torch.log_softmax(logits, -1)[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0].numpy()
    got = np.array(engine("logprobs", model, ids=",".join(map(str, ids)))["logprobs"])
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
