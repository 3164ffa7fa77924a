"""A fixed-seed CIPO run on a learnable synthetic task raises the mean training reward."""

import json
import random

import numpy as np
import pytest

from cipo_jax.config import load_config
from cipo_jax.train.metrics import read_metrics
from cipo_jax.train.trainer import train


def _noisy_addition(path):
    """1-digit additions whose SFT targets are right half the time (else off by 1-2): the warm
    policy knows the answer but samples it only about a third of the time, which RL can fix."""
    rng = random.Random(0)
    with open(path, "w") as f:
        for a in range(10):
            for b in range(10):
                for k, resp in enumerate((a + b, a + b + rng.choice([-2, -1, 1, 2]))):
                    f.write(json.dumps({"id": f"add-{a}-{b}-{k}", "prompt": f"Q: {a}+{b} =", "answer": str(a + b),
                                        "verifier": "exact", "response": f" {resp}"}) + "\n")


@pytest.mark.slow
def test_cipo_raises_mean_reward(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    _noisy_addition(tasks)
    cfg = load_config("configs/tiny.yaml", [
        f"run.run_dir={tmp_path / 'run'}", f"tasks.spec=jsonl:{tasks}", "run.steps=30", "sft.steps=300",
        "sft.batch_size=64", "optim.lr=1e-3", "optim.schedule=constant", "model.vocab_size=64",
        "sampling.max_new_tokens=4", "run.ckpt_every=30", "run.log_tensorboard=false"])
    train(cfg, progress_bar=False)
    reward = np.array([r["reward_mean"] for r in read_metrics(tmp_path / "run")])
    assert len(reward) == 30
    assert (read_metrics(tmp_path / "run")[0]["corr_count"]) > 0  # the correction stream was on
    # Measured at this seed: first five steps 0.29, last ten 0.38 (per-step noise ~0.06).
    assert reward[-10:].mean() > reward[:5].mean() + 0.05, reward.round(2).tolist()
