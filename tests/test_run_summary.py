"""The end-of-run reward summary of `train` against hand-worked values."""

import json

import pytest

from cipo_jax.train.cli import run_summary
from cipo_jax.train.metrics import reward_change


def test_reward_change_hand_case():
    # 20 steps, tenths of 2 steps: first (0.1, 0.3) mean .2, SE = sd .141421 / sqrt 2 = .1;
    # last (0.5, 0.9) mean .7, SE = .282843 / sqrt 2 = .2. Steps without a reward are skipped.
    rewards = [0.1, 0.3] + [0.4] * 16 + [0.5, 0.9]
    rows = [{"step": i + 1, "reward_mean": r} for i, r in enumerate(rewards)] + [{"step": 21, "reward_mean": None}]
    c = reward_change(rows)
    assert (c["steps"], c["window"]) == (20, 2)
    assert c["first"] == pytest.approx(0.2) and c["first_se"] == pytest.approx(0.1)
    assert c["last"] == pytest.approx(0.7) and c["last_se"] == pytest.approx(0.2)
    assert c["change"] == pytest.approx(0.5)
    assert reward_change(rows[:3])["window"] == 1  # fewer than 10 steps: one step each side
    with pytest.raises(ValueError, match="no reward_mean"):
        reward_change([{"step": 1}])


def test_run_summary_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "reward_mean": i / 10}) + "\n"
                                                    for i in range(1, 11)))
    line = run_summary(str(tmp_path))
    assert line.startswith("reward_mean 0.100 ± 0.000 over the first 1 steps -> 1.000 ± 0.000 over the last 1 (+0.900)")
    assert str(tmp_path / "checkpoints") in line and "\n" not in line
    assert run_summary(str(tmp_path / "none")).startswith("no RL steps logged")
