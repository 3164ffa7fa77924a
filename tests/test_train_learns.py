"""RL learns: on a task the demo settings were never tuned on (max of three digits from a JSONL
file, exact verifier, a 25-step SFT warm start that teaches the format more than the rule), both
GRPO and CIPO raise the mean training reward within 80 RL steps (each arm at its own seed; the
test runs 40 of them, which measured runs show is enough: +0.25 by step 40, +0.41-0.45 by 80).

The criterion is statistical, not a number from one run: per-step rewards of the last 10 steps
against the first 10, the difference at least 0.15 AND a Welch t statistic above 3 (steps as
units; neighbouring steps are correlated, so this is a lenient test of noise, which the 0.15
floor backs up).
"""

import json
import math
import random

import numpy as np
import pytest

from cipo_jax.config import load_config
from cipo_jax.train.metrics import read_metrics
from cipo_jax.train.trainer import train


def _max_of_three(path, n=1000):
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(n):
            a, b, c = (rng.randint(0, 9) for _ in range(3))
            f.write(json.dumps({"id": f"max-{i}", "prompt": f"Q: max {a} {b} {c} =", "answer": str(max(a, b, c)),
                                "verifier": "exact", "response": f" {max(a, b, c)}"}) + "\n")


def welch_t(a: np.ndarray, b: np.ndarray) -> float:
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    return float((b.mean() - a.mean()) / se) if se > 0 else math.inf


def test_welch_t_hand_case():
    # means 1 and 3, variances 1 and 4 (ddof 1), 3 values each: se = sqrt(1/3 + 4/3) = 1.29099.
    assert welch_t(np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0])) == pytest.approx(2 / math.sqrt(5 / 3))


@pytest.mark.slow
@pytest.mark.parametrize("arm,seed", [("grpo", 0), ("cipo", 1)])
def test_rl_raises_training_reward_on_an_unseen_task(tmp_path, arm, seed):
    tasks = tmp_path / "max3.jsonl"
    _max_of_three(tasks)
    run = tmp_path / f"{arm}-{seed}"
    cfg = load_config("configs/demo.yaml", [
        f"run.run_dir={run}", f"tasks.spec=jsonl:{tasks}", "sft.steps=25", "run.steps=40", f"run.seed={seed}",
        "run.ckpt_every=40", "run.log_tensorboard=false", *(["cipo.C=0"] if arm == "grpo" else [])])
    train(cfg, progress_bar=False)
    rows = read_metrics(run)
    reward = np.array([r["reward_mean"] for r in rows])
    assert len(reward) == 40
    if arm == "cipo":
        assert rows[0]["corr_count"] > 0  # the correction stream was on
    first, last = reward[:10], reward[-10:]
    assert last.mean() - first.mean() >= 0.15, (seed, reward.round(2).tolist())
    assert welch_t(first, last) > 3, (seed, reward.round(2).tolist())
