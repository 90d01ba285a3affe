"""Dequantization of every GGML block type equals gguf-py's (a port of llama.cpp's)."""
import numpy as np
import pytest

from conftest import engine  # noqa: F401  (the CLI path)
from conftest import ENGINE

import subprocess

TYPES = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
         "Q6_K"]


def _random_blocks(qtype, blocks, rng):
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    t = GGMLQuantizationType[qtype]
    elems, nbytes = GGML_QUANT_SIZES[t]
    raw = rng.integers(0, 256, size=(blocks, nbytes), dtype=np.uint8)
    # Random bytes in f16 scale fields could be inf/nan; write finite scales where they live.
    def put_f16(col, values):
        raw[:, col:col + 2] = values.astype(np.float16).view(np.uint8).reshape(blocks, 2)
    scale = rng.uniform(-0.1, 0.1, size=blocks)
    if qtype in ("Q4_0", "Q5_0", "Q8_0", "Q4_1", "Q5_1"):
        put_f16(0, scale)
        if qtype in ("Q4_1", "Q5_1"):
            put_f16(2, rng.uniform(-1, 1, size=blocks))
    elif qtype in ("Q4_K", "Q5_K"):
        put_f16(0, scale)
        put_f16(2, rng.uniform(0, 0.1, size=blocks))
    elif qtype == "Q6_K":
        put_f16(208, scale)
    elif qtype == "Q2_K":
        put_f16(80, scale)
        put_f16(82, rng.uniform(0, 0.1, size=blocks))
    elif qtype == "Q3_K":
        put_f16(108, scale)
    elif qtype == "F16":
        raw = rng.uniform(-100, 100, size=blocks * elems).astype(np.float16).view(np.uint8)
    elif qtype == "BF16":
        f = rng.uniform(-100, 100, size=blocks * elems).astype(np.float32)
        raw = (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    return t, np.ascontiguousarray(raw).reshape(-1)


@pytest.mark.isa
@pytest.mark.parametrize("qtype", TYPES)
def test_dequantize_equals_gguf_py(qtype, tmp_path):
    from gguf.quants import dequantize
    rng = np.random.default_rng(1234)
    t, raw = _random_blocks(qtype, 64, rng)
    want = dequantize(raw, t).astype(np.float32).reshape(-1)
    src, dst = tmp_path / "blocks", tmp_path / "values"
    raw.tofile(src)
    subprocess.run([ENGINE, "dequantize", str(src), f"--type={qtype}", f"--out={dst}"], check=True)
    got = np.fromfile(dst, dtype=np.float32)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
