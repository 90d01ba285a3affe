"""INT8 activation fake quantization (engine/quant/activation_quant.h) against torch: symmetric,
one step per sequence's tensor (max|x| / 127, SmoothQuant's), rounding half to even, and the super
activations (the super weight's input channel at its down_proj, its output channel in the normed
inputs of every later layer) replaced by the tensor's lower median for the step and written back.

The comparison is per tensor, on the activations SmolLM2's real forward pass hands each site: a
perplexity against transformers with the same quantization in forward hooks is no oracle here,
because per-tensor INT8 makes this model chaotic (1e-6 relative noise on the hooks' inputs moves
one window's perplexity by ~15%), so the two would disagree by far more than either's error."""
import os

import numpy as np
import pytest

from conftest import SMOLLM2, WIKITEXT, engine

SUPER_WEIGHT = (11, 507, 1229)  # SmolLM2-135M's: layer 11, down_proj [row, col]


def held_channels(layer, site):
    sw_layer, row, col = SUPER_WEIGHT
    if site == "down_input" and layer == sw_layer:
        return [col]
    if site in ("qkv_input", "gate_up_input") and layer > sw_layer:
        return [row]
    return []


def fake_quantize(torch, x, channels, bits=8):
    """One sequence's activations [tokens, cols], float32, as the engine defines it."""
    x = x.clone()
    held = []
    for c in channels:
        t = int(torch.argmax(x[:, c].abs()))
        held.append((t, c, x[t, c].clone()))
    if held:
        median = torch.median(x)  # the lower median
        for t, c, _ in held:
            x[t, c] = median
    step = x.abs().max().clamp(min=1e-5) / ((1 << (bits - 1)) - 1)
    x = torch.round(x / step) * step  # torch.round: half to even
    for t, c, v in held:
        x[t, c] = v
    return x


@pytest.fixture(scope="module")
def ids():
    return engine("tokenize", SMOLLM2, text_file=WIKITEXT)["ids"][:256]


@pytest.mark.parametrize("layer,site", [(11, "down_input"), (12, "qkv_input"),
                                        (20, "gate_up_input"), (5, "o_input"), (29, "down_input")])
@pytest.mark.parametrize("hold", [False, True])
def test_each_sites_quantization_equals_torch(layer, site, hold, ids, torch, tmp_path):
    prefix = os.path.join(str(tmp_path), f"{layer}.{site}")
    flags = {"activations": "8,hold", "keep": ",".join(map(str, SUPER_WEIGHT))} if hold \
        else {"activations": "8"}
    info = engine("activations", SMOLLM2, ids=",".join(map(str, ids)), layer=layer, site=site,
                  out=prefix, **flags)
    shape = (info["tokens"], info["cols"])
    x = np.fromfile(prefix + ".input.f32", dtype=np.float32).reshape(shape)
    got = np.fromfile(prefix + ".quantized.f32", dtype=np.float32).reshape(shape)
    channels = held_channels(layer, site) if hold else []
    want = fake_quantize(torch, torch.from_numpy(x), channels).numpy()
    differ = np.argwhere(got != want)
    assert len(differ) == 0, (f"{len(differ)} of {got.size} differ, first "
                              f"{[(int(t), int(c), got[t, c], want[t, c]) for t, c in differ[:5]]}")
    assert np.count_nonzero(got != x) > x.size // 2  # it quantized
    if (layer, site) == (11, "down_input"):
        # The activation the super weight multiplies, at the first token: the tensor's largest.
        assert np.unravel_index(np.abs(x).argmax(), shape) == (0, SUPER_WEIGHT[2])
        assert abs(x[0, SUPER_WEIGHT[2]]) > 1000
        if hold:
            assert got[0, SUPER_WEIGHT[2]] == x[0, SUPER_WEIGHT[2]]
        # Held out, the step shrinks to the next largest; without, most values round to zero.
        zeros = np.count_nonzero(got == 0) / got.size
        assert zeros > 0.9 if not hold else zeros > 0.5


def test_held_out_super_activation_lowers_perplexity_over_windows():
    """Over 8 windows of 512 (the chaos above averages out) holding the super activation out of
    the step gives part of the INT8 activations' loss back; neither reaches FP."""
    common = {"text_file": WIKITEXT, "window": 512, "max_windows": 8}
    fp = engine("perplexity", SMOLLM2, **common)["perplexity"]
    plain = engine("perplexity", SMOLLM2, activations="8", **common)["perplexity"]
    held = engine("perplexity", SMOLLM2, activations="8,hold",
                  keep=",".join(map(str, SUPER_WEIGHT)), **common)["perplexity"]
    print(f"FP {fp:.2f}, A8 {plain:.2f}, A8 SA held out {held:.2f}")
    assert fp < held < plain
