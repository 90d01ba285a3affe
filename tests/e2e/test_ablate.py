"""Ablate through the real server and client: every setting a row, the super weights from Locate
by default, bad requests refused, cancellation, and the result after a restart."""

import pytest

from conftest import PLANTED, check_cancel_mid_job_kept_across_a_restart, coordinate

SMALL = ["--tasks=wikitext2,piqa,lambada", "--max_examples=4", "--window=128", "--max_windows=1",
         "--token_prob_contexts=4"]


def test_every_setting_is_a_row_on_a_small_model(server):
    layer, row, col = PLANTED
    r = server.call("ablate", "--model=planted", f"--super_weights={layer},{row},{col}",
                    "--scales=0,1,2", *SMALL)["result"]
    assert r["super_weights_source"] == "request"
    assert [coordinate({"coordinate": c}) for c in r["super_weights"]] == [PLANTED]
    settings = [row["setting"] for row in r["rows"]]
    assert settings == ["intact", "prune SW", "scale SW x0", "scale SW x1", "scale SW x2",
                        "prune outliers, SW kept", "prune outliers and SW", "prune SW, restore SA"]
    rows = {row["setting"]: row for row in r["rows"]}
    for row in r["rows"]:
        m = row["metrics"]
        for name in ("wikitext2/perplexity", "piqa/acc", "piqa/acc_norm", "lambada/acc",
                     "lambada/perplexity", "average/acc"):
            assert name in m, (row["setting"], name)
        assert row["examples"] == {"piqa": 4, "lambada": 4}
    intact, pruned = rows["intact"]["metrics"], rows["prune SW"]["metrics"]
    assert rows["scale SW x1"]["metrics"] == intact
    assert rows["scale SW x0"]["metrics"] == pruned
    # The planted weight carries the model: without it perplexity moves.
    assert pruned["wikitext2/perplexity"] != intact["wikitext2/perplexity"]
    assert int(rows["prune outliers, SW kept"]["outliers_pruned"]) > 0


def test_smollm2_super_weight_from_locate_and_the_stopword_shift(server):
    r = server.call("ablate", "--model=smollm2.gguf", "--settings=prune,token_probs",
                    "--tasks=lambada", "--max_examples=8", "--token_prob_contexts=20")["result"]
    assert r["super_weights_source"] == "locate"
    assert [coordinate({"coordinate": c}) for c in r["super_weights"]] == [(11, 507, 1229)]
    intact, pruned = (row["metrics"] for row in r["rows"])
    assert pruned["lambada/perplexity"] > 10 * intact["lambada/perplexity"]
    probs = {t["token"]: t for t in r["token_probabilities"]}
    # The paper: without the super weight, stopwords and punctuation gain probability.
    for token in ("the", "."):
        assert probs[token]["pruned"] > probs[token]["intact"], probs[token]


@pytest.mark.parametrize("flags,message", [
    (["--tasks=mmlu"], "unknown task"),
    (["--super_weights=1,9999,0"], "outside"),
    (["--super_weights=40,0,0"], "outside"),
    (["--settings=prune,bogus"], "unknown ablation setting"),
    (["--outlier_fraction=2"], "outlier_fraction"),
    (["--window=1"], "window"),
])
def test_bad_ablations_are_refused(server, flags, message):
    out = server.client("ablate", "--model=planted", *flags, check=False)
    assert out.returncode == 1
    assert "INVALID_ARGUMENT" in out.stderr and message in out.stderr, out.stderr
    assert server.client("models").returncode == 0


def test_cancelled_mid_job_and_kept_across_a_restart(model_root, tmp_path, job_store_flags):
    check_cancel_mid_job_kept_across_a_restart(
        model_root, tmp_path, "ablate",
        ["--model=planted", "--super_weights=1,37,101", "--settings=prune",
         *SMALL[:-1]],  # no token_probs: no contexts
        ["--model=smollm2.gguf", "--settings=prune,scale"],
        job_store_flags)