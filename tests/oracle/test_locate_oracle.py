"""Locate on SmolLM2-135M-Instruct equals the same method run with forward hooks on down_proj
in transformers: same coordinates, same activation magnitudes."""
import numpy as np
import pytest

from conftest import SMOLLM2, engine

THRESHOLD, SPIKE_RATIO, MAX_ITERATIONS = 50.0, 10.0, 8


def _hf_locate(hf, ids, torch):
    """The engine's algorithm (analysis/locate.h), written again over transformers' modules."""
    layers = hf.model.layers
    found = []
    for _ in range(MAX_ITERATIONS):
        stats = {}

        def hook(index):
            def fn(module, inputs, output):
                x, y = inputs[0][0], output[0]
                flat = int(y.abs().argmax())
                token, row = divmod(flat, y.shape[1])
                stats[index] = (float(y.abs().max()), token, row, x[token].clone(), float(y[token, row]))
            return fn

        handles = [layer.mlp.down_proj.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
        saved = []
        for (l, r, c, _, _, _) in found:  # zero what was found, as the engine's edit set does
            w = layers[l].mlp.down_proj.weight
            saved.append((w, r, c, float(w[r, c])))
            w.data[r, c] = 0
        with torch.no_grad():
            hf(torch.tensor([ids]))
        for w, r, c, v in saved:
            w.data[r, c] = v
        for h in handles:
            h.remove()
        maxima = [stats[i][0] for i in range(len(layers))]
        best = None
        for l, m in enumerate(maxima):
            others = sorted(maxima[:l] + maxima[l + 1:])
            floor = max(THRESHOLD, SPIKE_RATIO * others[len(others) // 2])
            if m >= floor and (best is None or m > maxima[best]):
                best = l
        if best is None:
            break
        _, token, row, x, out = stats[best]
        w = layers[best].mlp.down_proj.weight[row]
        col = int((w * x).abs().argmax())
        if any((l, r, c) == (best, row, col) for (l, r, c, *_rest) in found):
            break
        found.append((best, row, col, float(x[col]), out, token))
    return found


@pytest.mark.isa
def test_locate_smollm2_equals_hooks_in_transformers(hf_models, torch):
    ids = engine("tokenize", SMOLLM2, text="Apple Inc. is a worldwide tech company.")["ids"]
    want = _hf_locate(hf_models(SMOLLM2), ids, torch)
    got = engine("locate", SMOLLM2, ids=",".join(map(str, ids)))["candidates"]
    assert [(c["layer"], c["row"], c["col"], c["token"]) for c in got] == \
        [(l, r, c, t) for (l, r, c, _, _, t) in want]
    assert (got[0]["layer"], got[0]["row"], got[0]["col"]) == (11, 507, 1229)
    for c, (_, _, _, x, out, _) in zip(got, want):
        np.testing.assert_allclose(c["input_activation"], x, rtol=1e-3)
        np.testing.assert_allclose(c["output_activation"], out, rtol=1e-3)
