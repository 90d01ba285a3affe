"""The engine's importance matrix (engine/analysis/imatrix.h, `superweight-engine imatrix`)
against llama.cpp's llama-imatrix on the same model (SmolLM2 in F32), text and chunks: the same
file layout and entries, the same token counts, the sums of squared activations equal within
the two forward passes' rounding; llama-quantize reads the engine's file; the super weight's
column boosted by exactly the factor asked."""
import os
import subprocess

import numpy as np
import pytest

from conftest import ENGINE, LLAMA_CPP_TOOLS, THREADS, WIKITEXT

pytestmark = [pytest.mark.formats, pytest.mark.llama_cpp]

CHUNK, CHUNKS = 128, 16


def _field(reader, key):
    f = reader.fields[key]
    value = f.parts[f.data[0]]
    return bytes(value).decode() if f.types[0].name == "STRING" else int(value[0])


def _tensors(path):
    from fast_gguf import GGUFReader
    reader = GGUFReader(path)
    return reader, {t.name: np.asarray(t.data, dtype=np.float64).reshape(-1)
                    for t in reader.tensors}


@pytest.fixture(scope="module")
def imatrices(smollm2_f32, tmp_path_factory):
    d = tmp_path_factory.mktemp("imatrix")
    ours, theirs = str(d / "engine.imatrix.gguf"), str(d / "llama.imatrix.gguf")
    subprocess.run([ENGINE, "imatrix", smollm2_f32, f"--text_file={WIKITEXT}",
                    f"--chunk={CHUNK}", f"--chunks={CHUNKS}", f"--out={ours}"],
                   check=True, capture_output=True)
    # An f32 KV cache and no flash attention: llama.cpp's defaults keep keys and values in f16,
    # which moves its later layers' activations by up to 4e-3 (measured) from an f32 pass.
    run = subprocess.run([os.path.join(LLAMA_CPP_TOOLS, "llama-imatrix"), "-m", smollm2_f32,
                          "-f", WIKITEXT, "-c", str(CHUNK), "--chunks", str(CHUNKS),
                          "-t", str(THREADS), "--no-ppl", "-fa", "off", "-ctk", "f32",
                          "-ctv", "f32", "-o", theirs],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return ours, theirs


def test_engine_imatrix_equals_llama_imatrix(imatrices):
    ours, theirs = imatrices
    a, ta = _tensors(ours)
    b, tb = _tensors(theirs)
    assert _field(a, "general.type") == _field(b, "general.type") == "imatrix"
    for key in ["imatrix.chunk_count", "imatrix.chunk_size"]:
        assert _field(a, key) == _field(b, key), key
    assert _field(a, "imatrix.chunk_count") == CHUNKS
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]  # sorted, as llama's
    assert len(ta) == 2 * 210  # q, k, v, o, gate, up, down of 30 layers: in_sum2 and counts
    for name in ta:
        if name.endswith(".counts"):
            assert ta[name].tolist() == tb[name].tolist() == [CHUNK * CHUNKS], name
            continue
        x, y = ta[name], tb[name]
        assert x.shape == y.shape, name
        assert np.all(x > 0), name
        # Every column within 1e-4 (1e-5 measured: llama.cpp sums in float, the engine in double).
        assert np.max(np.abs(x - y) / y) < 1e-4, name


def test_llama_quantize_reads_the_engine_imatrix(imatrices, smollm2_f32, tmp_path):
    ours, _ = imatrices
    out = tmp_path / "q4km.gguf"
    run = subprocess.run([os.path.join(LLAMA_CPP_TOOLS, "llama-quantize"), "--imatrix", ours,
                          smollm2_f32, str(out), "Q4_K_M", "2"], capture_output=True, text=True)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    log = run.stdout + run.stderr
    assert "have importance matrix data with 210 entries" in log, log[-3000:]
    # Every layer's weight found its entry (the embedding, which no matmul reads, has none).
    assert "did not find weights for blk." not in log, log[-3000:]
    assert out.stat().st_size > 0


def test_boost_multiplies_the_super_weights_column(smollm2_f32, imatrices, tmp_path):
    ours, _ = imatrices
    boosted = str(tmp_path / "boosted.imatrix.gguf")
    subprocess.run([ENGINE, "imatrix", smollm2_f32, f"--text_file={WIKITEXT}",
                    f"--chunk={CHUNK}", f"--chunks={CHUNKS}", f"--out={boosted}", "--boost=100",
                    "--super_weights=11,507,1229"], check=True, capture_output=True)
    _, plain = _tensors(ours)
    _, more = _tensors(boosted)
    name = "blk.11.ffn_down.weight.in_sum2"
    assert more[name][1229] == pytest.approx(100 * plain[name][1229], rel=1e-6)
    others = np.ones(len(plain[name]), dtype=bool)
    others[1229] = False
    assert np.array_equal(more[name][others], plain[name][others])
    for key in plain:
        if key != name:
            assert np.array_equal(more[key], plain[key]), key
