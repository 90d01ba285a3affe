"""The CI gate, pytest form: the quantized model must keep its reference's super weights.

    SUPERWEIGHT_SERVER=host:port SUPERWEIGHT_TOKEN_FILE=token MODEL=q4.gguf REFERENCE=f16.gguf \
      pytest examples/ci/test_gate.py

Needs the Python package (pip install ./python). SUPER_WEIGHTS (LAYER,ROW,COL, space-separated),
WINDOW, MAX_WINDOWS and MAX_PPL_RATIO are optional, as for gate.sh."""
import os

from superweight import Client


def test_quantized_model_keeps_the_super_weights():
    token_file = os.environ.get("SUPERWEIGHT_TOKEN_FILE")
    token = open(token_file).read().strip() if token_file else None
    extra = {k.lower(): int(os.environ[k]) for k in ("WINDOW", "MAX_WINDOWS") if os.environ.get(k)}
    if os.environ.get("MAX_PPL_RATIO"):
        extra["max_perplexity_ratio"] = float(os.environ["MAX_PPL_RATIO"])
    coordinates = [tuple(map(int, c.split(","))) for c in os.environ.get("SUPER_WEIGHTS", "").split()]
    with Client(os.environ["SUPERWEIGHT_SERVER"], token=token) as sw:
        result = sw.check(model=os.environ["MODEL"], reference=os.environ["REFERENCE"],
                          super_weights=coordinates, **extra)
    assert result.passed, "\n".join(result.failures)
