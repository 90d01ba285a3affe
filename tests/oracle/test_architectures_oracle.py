"""Every supported architecture and storage variant against transformers, on small models that
transformers itself creates with random weights (no hub access is needed)."""
import numpy as np
import pytest

from conftest import engine, engine_logits, relative_error

COMMON = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=256, max_position_embeddings=128,
              initializer_range=0.2, tie_word_embeddings=False)

CASES = {
    "llama": ("LlamaConfig", {}),
    "llama-rope-llama3": ("LlamaConfig", dict(rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16})),
    "llama-tied": ("LlamaConfig", dict(tie_word_embeddings=True)),
    "mistral": ("MistralConfig", dict(sliding_window=None)),
    "mistral-window": ("MistralConfig", dict(sliding_window=8)),  # IDS are 20 tokens
    "qwen2": ("Qwen2Config", {}),
    "olmo": ("OlmoConfig", dict(clip_qkv=0.5)),
    "phi3": ("Phi3Config", dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)),
}


def _make(tmp_path, torch, name, dtype=None, shard=False):
    import transformers
    cls_name, extra = CASES[name]
    config = getattr(transformers, cls_name)(**{**COMMON, **extra})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    if name == "qwen2":  # random, non-zero attention biases
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(proj.bias, std=0.5)
    if dtype is not None:
        model = model.to(dtype)
    out = tmp_path / name
    model.save_pretrained(out, safe_serialization=True,
                          **({"max_shard_size": "100KB"} if shard else {}))
    # The reference runs in f32 on exactly the stored (possibly rounded) weights.
    ref = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    return str(out), ref


IDS = [1, 17, 200, 3, 45, 99, 128, 7, 7, 7, 250, 31, 64, 2, 180, 90, 11, 5, 42, 101]


@pytest.mark.isa
@pytest.mark.parametrize("name", sorted(CASES))
def test_architecture_logits_f32(name, tmp_path, torch):
    path, ref = _make(tmp_path, torch, name)
    with torch.no_grad():
        want = ref(torch.tensor([IDS])).logits[0].numpy()
    got = engine_logits(path, IDS, tmp_path)
    assert engine("info", path)["architecture"] == name.split("-")[0]
    err = relative_error(got, want)
    print(f"{name}: relative logit error {err:.2e}")
    assert err < 1e-4


@pytest.mark.isa
@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_half_precision_safetensors(dtype_name, tmp_path, torch):
    path, ref = _make(tmp_path, torch, "llama", dtype=getattr(torch, dtype_name))
    assert engine("info", path)["down_proj_dtype"] == {"bfloat16": "BF16", "float16": "F16"}[dtype_name]
    with torch.no_grad():
        want = ref(torch.tensor([IDS])).logits[0].numpy()
    assert relative_error(engine_logits(path, IDS, tmp_path), want) < 1e-4
    if dtype_name == "bfloat16":  # bf16 weights are used in place by the bf16 path
        assert relative_error(engine_logits(path, IDS, tmp_path, bf16=True), want) < 3e-2


def test_sharded_safetensors(tmp_path, torch):
    path, ref = _make(tmp_path, torch, "llama", shard=True)
    import os
    assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
    with torch.no_grad():
        want = ref(torch.tensor([IDS])).logits[0].numpy()
    assert relative_error(engine_logits(path, IDS, tmp_path), want) < 1e-4
