"""Hugging Face exports (superweight-engine export-hf) loaded by transformers as they are: no
weight fixups, no missing or unexpected keys, the engine's logits reproduced."""
import filecmp
import json
import os
import shutil

import numpy as np
import pytest

from conftest import SMOLLM2, TINYSTORIES, engine, relative_error

# SmolLM2 fake-quantized as the paper's INT4 row with its super weight kept.
QUANTIZE = {"quantize": "4,65536,z", "keep": "11,507,1229"}
PROMPT = "Apple Inc. is a worldwide tech company. Once upon a time, a little dog"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json"]

# A bf16 export rounds every weight to 8 significant bits (relative error <= 2^-9), transformers
# then computing in f32. Fake-quantized values (min + code * step in f32) are not bf16 numbers,
# unlike the Q4_1 block codes the engine's own bf16 path keeps exact, so the rounding moves
# SmolLM2's logits more than --bf16 does: measured 3.0e-2 of their scale against the unrounded
# view (each projection kind alone 0.8e-2 to 2.2e-2, norms 0).
BF16_EXPORT_BOUND = 6e-2


def _export(model, out, **flags):
    info = engine("export-hf", model, out=out, **flags)
    assert info["out"] == out
    return out


def _load(path, torch):
    from transformers import AutoModelForCausalLM
    model, info = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32,
                                                       output_loading_info=True)
    # "As it is": every parameter came from the file (transformers would initialise a missing
    # one at random and say so only here).
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    return model.eval()


def _hf_logits(model, ids, torch):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _engine_logits(model, ids, out, **flags):
    info = engine("logits", model, ids=",".join(map(str, ids)), out=out, **flags)
    return np.fromfile(out, dtype=np.float32).reshape(info["tokens"], info["vocab"])


@pytest.fixture(scope="module")
def smollm2_exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_hf_smollm2")
    yield {dtype: _export(SMOLLM2, str(root / dtype), dtype=dtype, **QUANTIZE)
           for dtype in ("f32", "bf16")}
    shutil.rmtree(root, ignore_errors=True)  # 0.8 GB that pytest would keep for three runs


@pytest.fixture(scope="module")
def smollm2_ids():
    return engine("tokenize", SMOLLM2, text=PROMPT)["ids"]


@pytest.fixture(scope="module")
def smollm2_engine_logits(smollm2_ids, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export_hf_logits") / "logits.f32")
    return _engine_logits(SMOLLM2, smollm2_ids, out, **QUANTIZE)


def test_fake_quantized_gguf_export_f32_reproduces_engine_logits(
        smollm2_exports, smollm2_ids, smollm2_engine_logits, torch):
    path = smollm2_exports["f32"]
    # GGUF sources carry no tokenizer files; SmolLM2's embedding is tied, so no lm_head.
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
    from safetensors import safe_open
    with safe_open(os.path.join(path, "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert "lm_head.weight" not in f.keys()
        assert f.get_slice("model.embed_tokens.weight").get_dtype() == "F32"
    hf = _load(path, torch)
    assert hf.config.tie_word_embeddings
    want = _hf_logits(hf, smollm2_ids, torch)
    err = relative_error(smollm2_engine_logits, want)
    print(f"f32 export relative logit error {err:.2e}")
    assert err < 1e-4


def test_fake_quantized_gguf_export_bf16_is_the_rounded_f32_export(
        smollm2_exports, smollm2_ids, smollm2_engine_logits, torch):
    with open(os.path.join(smollm2_exports["bf16"], "config.json")) as f:
        assert json.load(f)["torch_dtype"] == "bfloat16"
    hf_bf16 = _load(smollm2_exports["bf16"], torch)
    # Every weight is torch's own round-to-nearest-even of the f32 export's.
    hf_f32 = _load(smollm2_exports["f32"], torch)
    f32_params = dict(hf_f32.named_parameters())
    for name, p in hf_bf16.named_parameters():
        assert torch.equal(p, f32_params[name].bfloat16().float()), name
    want = _hf_logits(hf_bf16, smollm2_ids, torch)
    # The engine computing on the rounded weights (the export reopened) agrees as in f32 ...
    on_export = _engine_logits(smollm2_exports["bf16"], smollm2_ids,
                               os.path.join(os.path.dirname(smollm2_exports["bf16"]), "l.f32"))
    err = relative_error(on_export, want)
    print(f"bf16 export, engine on it: relative logit error {err:.2e}")
    assert err < 1e-4
    # ... and the rounding itself stays bf16-sized against the unrounded view.
    err = relative_error(smollm2_engine_logits, want)
    print(f"bf16 export vs the f32 view: relative logit error {err:.2e}")
    assert err < BF16_EXPORT_BOUND
    assert np.mean(smollm2_engine_logits.argmax(-1) == want.argmax(-1)) > 0.8


def test_hf_source_export_matches_source_and_copies_tokenizer(tmp_path, torch):
    path = _export(TINYSTORIES, str(tmp_path / "tinystories"), dtype="f32")
    for name in TOKENIZER_FILES:
        assert filecmp.cmp(os.path.join(TINYSTORIES, name), os.path.join(path, name),
                           shallow=False), name
    from transformers import AutoTokenizer
    text = "Once upon a time, a little dog"
    assert (AutoTokenizer.from_pretrained(path)(text)["input_ids"] ==
            AutoTokenizer.from_pretrained(TINYSTORIES)(text)["input_ids"])
    ids = engine("tokenize", TINYSTORIES, text=PROMPT)["ids"]
    want = _hf_logits(_load(TINYSTORIES, torch), ids, torch)
    got = _hf_logits(_load(path, torch), ids, torch)
    err = relative_error(got, want)
    print(f"export vs source relative logit error {err:.2e}")
    assert err < 1e-5
