"""The README's first example learns: `train --config configs/tiny.yaml` as shipped (GRPO with
cipo.C=0, and CIPO) raises the mean training reward of the last fifth of its steps over the
first fifth by at least 0.05, at two seeds. Both arms of a seed start from one SFT warm start
(the SFT of a seed does not depend on the arm), so the SFT runs once per seed."""

import numpy as np
import pytest

from cipo_jax.config import load_config
from cipo_jax.train.metrics import read_metrics
from cipo_jax.train.runs import launch, share_warm_start


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_config_learns_for_grpo_and_cipo(tmp_path, seed):
    for arm in ("grpo", "cipo"):
        run = tmp_path / arm
        if arm == "cipo":
            share_warm_start(tmp_path / "grpo", run)
        cfg = load_config("configs/tiny.yaml", [f"run.run_dir={run}", f"run.seed={seed}", "run.log_tensorboard=false",
                                                "run.keep_checkpoints=5", *(["cipo.C=0"] if arm == "grpo" else [])])
        launch(cfg, progress_bar=False)
        reward = np.array([r["reward_mean"] for r in read_metrics(run)])
        fifth = len(reward) // 5
        assert len(reward) == cfg.run.steps and fifth >= 4
        assert reward[-fifth:].mean() - reward[:fifth].mean() >= 0.05, (arm, seed, reward.round(2).tolist())
