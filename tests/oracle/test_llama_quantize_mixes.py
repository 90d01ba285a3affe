"""llama.cpp's quantization mixes (Q4_K_M, Q3_K_M, Q2_K, ...): the file the engine writes for a
llama.cpp file type (formats/llama_quantize_plan.h, `requantize --file_type=`) holds the same
type and the same bytes in every tensor as the file llama.cpp's own llama_model_quantize (what
llama-quantize runs) writes from the same source, without an importance matrix; with
--tensor-type overrides too, whose effect on the mix's layer counting the engine follows."""
import os
import subprocess

import numpy as np
import pytest

from conftest import BENCH_PY, ENGINE

pytestmark = [pytest.mark.formats, pytest.mark.llama_cpp]

# llama_model_quantize as llama-quantize calls it: FTYPE [PATTERN=GGML_TYPE_ID ...].
LLAMA_QUANTIZE = r"""
import ctypes, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[3])
params.allow_requantize = True
params.nthread = 2
overrides = sys.argv[4:]
if overrides:
    Override = llama_cpp.llama_model_tensor_override
    table = (Override * (len(overrides) + 1))()
    for i, text in enumerate(overrides):
        pattern, type_id = text.rsplit("=", 1)
        table[i].pattern = pattern.encode()  # llama-quantize lower-cases it; these are already
        table[i].type = int(type_id)
    table[len(overrides)].pattern = None
    params.tt_overrides = ctypes.cast(table, ctypes.POINTER(Override))
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(),
                                        ctypes.byref(params)))
"""

FILE_TYPES = {"Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18,
              "Q8_0": 7}
GGML_TYPE_ID = {"F16": 1, "Q8_0": 8, "Q6_K": 14}


def _compare(source, file_type, overrides, tmp_path):
    from fast_gguf import GGUFReader
    ours, theirs = str(tmp_path / "engine.gguf"), str(tmp_path / "llama.gguf")
    subprocess.run([ENGINE, "requantize", source, f"--file_type={file_type}", f"--out={ours}"]
                   + [f"--tensor_type={p}={t}" for p, t in overrides], check=True,
                   capture_output=True)
    run = subprocess.run([BENCH_PY, "-c", LLAMA_QUANTIZE, source, theirs,
                          str(FILE_TYPES[file_type])]
                         + [f"{p}={GGML_TYPE_ID[t]}" for p, t in overrides],
                         capture_output=True, text=True)
    assert run.returncode == 0, f"llama_model_quantize failed: {run.stderr[-2000:]}"
    a, b = GGUFReader(ours), GGUFReader(theirs)
    os.remove(ours)
    os.remove(theirs)
    assert int(a.fields["general.file_type"].parts[-1][0]) == FILE_TYPES[file_type]
    assert int(b.fields["general.file_type"].parts[-1][0]) == FILE_TYPES[file_type]
    theirs_by_name = {t.name: t for t in b.tensors}
    assert sorted(theirs_by_name) == sorted(t.name for t in a.tensors)
    types = {}
    for t in a.tensors:
        u = theirs_by_name[t.name]
        assert t.tensor_type == u.tensor_type, (t.name, t.tensor_type.name, u.tensor_type.name)
        assert np.array_equal(np.asarray(t.data).view(np.uint8),
                              np.asarray(u.data).view(np.uint8)), f"{file_type} {t.name}"
        types[t.name] = t.tensor_type.name
    return types


def _count(types):
    counts = {}
    for t in types.values():
        counts[t] = counts.get(t, 0) + 1
    return counts


@pytest.mark.parametrize("file_type", sorted(FILE_TYPES))
def test_mix_equals_llama_quantize(file_type, smollm2_f32, tmp_path):
    types = _compare(smollm2_f32, file_type, [], tmp_path)
    counts = _count(types)
    assert counts.pop("F32") == 61  # norms (1-D) are never quantized
    # SmolLM2's 576-value rows take llama.cpp's fallbacks; only ffn_down (1536) holds K blocks.
    # The tied embedding is quantized as the output head: Q6_K, whose fallback is Q8_0.
    assert types["token_embd.weight"] == "Q8_0"
    assert sum(counts.values()) == 211
    if file_type == "Q2_K":
        # The Q2_K mix on SmolLM2 holds no Q2_K tensor: ffn_down and attn_v are raised to Q3_K,
        # and everything else falls back to Q4_0.
        assert counts == {"Q3_K": 30, "Q4_0": 180, "Q8_0": 1}
    if file_type == "Q4_K_M":
        assert counts == {"Q4_K": 16, "Q6_K": 14, "Q5_0": 166, "Q8_0": 15}
        # Layer 11 (the super weight's) is one of the layers use_more_bits raises.
        assert types["blk.11.ffn_down.weight"] == "Q6_K"


@pytest.mark.parametrize("file_type,overrides", [
    ("Q4_K_M", [(r"blk\.11\.ffn_down", "Q8_0")]),
    ("Q2_K", [(r"blk\.11\.ffn_down", "F16"), ("attn_v", "Q8_0")]),
])
def test_mix_with_overrides_equals_llama_quantize(file_type, overrides, smollm2_f32, tmp_path):
    types = _compare(smollm2_f32, file_type, overrides, tmp_path)
    assert types["blk.11.ffn_down.weight"] == overrides[0][1]
    if file_type == "Q4_K_M":
        # An overridden ffn_down is not counted, so llama.cpp's layer count runs one behind for
        # the layers after it and use_more_bits raises other ones: 12, 15, ... 24 instead of 14,
        # 17, ... 26 (13 Q6_K ffn_down where there were 14).
        assert _count(types)["Q6_K"] == 13
        assert [types[f"blk.{i}.ffn_down.weight"] for i in (12, 14, 24, 26)] == [
            "Q6_K", "Q4_K", "Q6_K", "Q4_K"]
