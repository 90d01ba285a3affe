"""The Ablate harness against lm-evaluation-harness itself (0.4.9, its own task YAMLs pointed at
the same local data, transformers' model of the same weights): per example, the same decision
for acc and acc_norm, and each choice's log-likelihood within 1e-4 relative, in f32."""
import json
import os
import subprocess

import pytest

from conftest import ROOT, SMOLLM2, engine

LMEVAL_PY = os.path.join(ROOT, ".venv-lmeval", "bin", "python")
DATA = os.path.join(ROOT, "server", "data", "eval")
# Each example is its own comparison (the decision and every choice's log-likelihood), so 20 per
# task show agreement as well as 100 would.
EXAMPLES = 20


def near_tie(values, chars=None):
    """Whether the best two (per-character where given) are within 1e-4 relative: a decision the
    last digits of a float may flip, in either implementation."""
    scores = sorted((v / c if chars else v) for v, c in zip(values, chars or [1] * len(values)))
    return len(scores) > 1 and abs(scores[-1] - scores[-2]) <= 1e-4 * abs(scores[-1])


TASKS = ["piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande", "sciq", "lambada"]


@pytest.fixture(scope="module")
def lm_eval_tasks():
    """lm-eval's answers for every task, from one run (its start and task index are most of a
    run's time at this size)."""
    out = subprocess.run([LMEVAL_PY, os.path.join(ROOT, "tools", "lmeval_oracle.py"), SMOLLM2,
                          ",".join(TASKS), DATA, str(EXAMPLES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["tasks"]


@pytest.mark.lmeval
@pytest.mark.parametrize("task", TASKS)
def test_same_decisions_and_loglikelihoods_as_lm_eval(task, lm_eval_tasks):
    want = lm_eval_tasks[task]
    got = engine("eval", SMOLLM2, task=task, data_dir=DATA, max_examples=EXAMPLES)
    assert len(got["examples"]) == len(want["examples"]) == EXAMPLES
    worst = 0.0
    for i, (g, w) in enumerate(zip(got["examples"], want["examples"])):
        assert len(g["logprobs"]) == len(w["logprobs"]), i
        for a, b in zip(g["logprobs"], w["logprobs"]):
            worst = max(worst, abs(a - b) / max(abs(b), 1e-9))
            assert abs(a - b) <= 1e-4 * abs(b) + 1e-5, (task, i, g["logprobs"], w["logprobs"])
        if task == "lambada":
            assert g["greedy"] == w["greedy"], (i, g, w)
            continue
        if not near_tie(w["logprobs"]):
            assert float(g["acc_pick"] == g["gold"]) == w["acc"], (task, i, g, w)
        if "acc_norm" in w and not near_tie(w["logprobs"], g["choice_chars"]):
            assert float(g["acc_norm_pick"] == g["gold"]) == w["acc_norm"], (task, i, g, w)
    print(f"{task}: worst relative log-likelihood difference {worst:.2e}; acc engine "
          f"{got['acc']:.3f}, lm-eval {want['metrics'].get('acc,none')}")
