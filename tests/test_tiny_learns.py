"""The README's first example learns: `train --config configs/tiny.yaml` as shipped (GRPO with
cipo.C=0, and CIPO) raises the mean training reward of the last fifth of its steps over the
first fifth by at least 0.05, at two seeds."""

import numpy as np
import pytest

from cipo_jax.config import load_config
from cipo_jax.train.metrics import read_metrics
from cipo_jax.train.trainer import train


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["grpo", "cipo"])
def test_tiny_config_learns_at_two_seeds(tmp_path, arm):
    for seed in (0, 1):
        run = tmp_path / f"{arm}-{seed}"
        cfg = load_config("configs/tiny.yaml", [f"run.run_dir={run}", f"run.seed={seed}", "run.log_tensorboard=false",
                                                *(["cipo.C=0"] if arm == "grpo" else [])])
        train(cfg, progress_bar=False)
        reward = np.array([r["reward_mean"] for r in read_metrics(run)])
        fifth = len(reward) // 5
        assert len(reward) == cfg.run.steps and fifth >= 4
        assert reward[-fifth:].mean() - reward[:fifth].mean() >= 0.05, (seed, reward.round(2).tolist())
