"""Multi-round self-correction: `eval --rounds 3` on a tiny checkpoint, and the per-round
metrics against a direct count over hand-made attempts."""

import json

import numpy as np
import pytest

from cipo_jax.cli import main
from cipo_jax.evaluation.selfcorrect import round_values, self_correction_metrics

TINY = ["sft.steps=20", "tasks.size=128", "grpo.num_prompts=2", "grpo.group_size=2", "cipo.C=1", "cipo.M=2",
        "model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=1", "run.log_tensorboard=false",
        "tasks.spec=arith:digits=1,operands=3,ops=+", "run.steps=0"]


def test_round_values_count_transitions_by_hand():
    # 4 problems, 3 rounds: columns are problems.
    attempts = np.array([[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 1, 0]], bool)
    m = {k: v.mean() for k, v in round_values(attempts).items()}
    assert (m["acc_t1"], m["acc_t2"], m["acc_t3"]) == (0.5, 0.5, 0.5)
    assert (m["delta_i2c_t2"], m["delta_c2i_t2"], m["delta_t2"]) == (0.25, 0.25, 0.0)  # p1 fixed, p3 broken
    assert (m["delta_i2c_t3"], m["delta_c2i_t3"], m["delta_t3"]) == (0.25, 0.25, 0.0)  # p2 fixed, p0 broken
    # rounds 1-2 agree with the two-attempt metrics
    two = self_correction_metrics(attempts[0], attempts[1])
    assert (two["delta_i2c"], two["delta_c2i"], two["delta"]) == (m["delta_i2c_t2"], m["delta_c2i_t2"], m["delta_t2"])
    with pytest.raises(ValueError, match="rounds >= 2"):
        round_values(attempts[:1])


@pytest.mark.slow
def test_eval_rounds_3_writes_consistent_per_round_metrics(tmp_path, capsys):
    from cipo_jax.config import load_config
    from cipo_jax.train.trainer import train

    run_dir = tmp_path / "run"
    train(load_config("configs/tiny.yaml", [*TINY, f"run.run_dir={run_dir}"]), progress_bar=False)
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run_dir), "--n", "2", "--size", "24", "--rounds", "3",
                 "--first-attempt", "sampled", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "acc@t3" in printed and "i->c@t3" in printed
    result = json.loads(out.read_text())
    rounds, se, pp = result["self_correction_rounds"], result["self_correction_rounds_se"], result["per_problem"]
    attempts = np.array([pp["t1"], pp["t2"], pp["t3"]], bool)
    for r in (1, 2, 3):
        assert rounds[f"acc_t{r}"] == pytest.approx(attempts[r - 1].mean())
        assert se[f"acc_t{r}"] == pytest.approx(attempts[r - 1].std(ddof=1) / np.sqrt(24))
    for r in (2, 3):
        # the sums close: delta per round = accuracy difference = fixed - broken
        assert rounds[f"delta_t{r}"] == pytest.approx(rounds[f"acc_t{r}"] - rounds[f"acc_t{r - 1}"])
        assert rounds[f"delta_t{r}"] == pytest.approx(rounds[f"delta_i2c_t{r}"] - rounds[f"delta_c2i_t{r}"])
    assert sum(rounds[f"delta_t{r}"] for r in (2, 3)) == pytest.approx(rounds["acc_t3"] - rounds["acc_t1"])
    # the two-attempt keys are unchanged and agree with round 2
    sc = result["self_correction"]
    assert (sc["acc_t2"], sc["delta"]) == pytest.approx((rounds["acc_t2"], rounds["delta_t2"]))
    assert result["settings"]["rounds"] == 3


def test_eval_feedback_quotes_the_verifier_for_failed_attempts_only():
    from cipo_jax.data.load import load_tasks
    from cipo_jax.evaluation.evaluate import _feedback
    from cipo_jax.verifiers import VerifierPool

    tasks = load_tasks("codegen:kind=io", size=2, seed=0, split="test")
    texts = [tasks[0].response, "print('nope')\n"]
    with VerifierPool(workers=1) as pool:
        reasons = _feedback(pool, tasks, texts, np.array([True, False]))
    assert reasons[0] == "" and reasons[1].startswith("case 0: wrong_answer; input ")
    assert "got 'nope\\n'" in reasons[1]
