"""The SFT warm start's correction-turn examples (sft.correction_fraction)."""

import numpy as np
import pytest

from cipo_jax.config import load_config
from cipo_jax.configlib import ConfigError
from cipo_jax.data.tasks import Task
from cipo_jax.train.sft import sft_request


def _tasks(n):
    return [Task(id=f"t{i}", prompt=f"Q: {i}+1 =", messages=None, reference=str(i + 1), verifier="exact",
                 meta={}, response=f" {i + 1}") for i in range(n)]


def test_fraction_zero_draws_nothing_and_shows_the_task():
    tasks = _tasks(5)
    rng, untouched = np.random.default_rng(0), np.random.default_rng(0)
    assert all(sft_request(t, tasks, 0.0, rng).attempt is None for t in tasks)
    assert rng.random() == untouched.random()  # no draw: batches stay as they were before the option


def test_correction_examples_follow_the_fraction_and_mix_stand_ins():
    tasks = _tasks(50)
    rng = np.random.default_rng(1)
    n = 20_000
    reqs = [sft_request(tasks[i % 50], tasks, 0.25, rng) for i in range(n)]
    corr = [(r, tasks[i % 50]) for i, r in enumerate(reqs) if r.attempt is not None]
    assert abs(len(corr) / n - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n)
    # Half the stand-ins are the task's own response, the other half a random task's (1/50 of
    # which is the same task by chance): P(own) = 1/2 + 1/2 * 1/50.
    own = np.mean([r.attempt == t.response for r, t in corr])
    assert abs(own - (0.5 + 0.5 / 50)) < 4 * np.sqrt(0.25 / len(corr))
    assert all(r.task is t for r, t in corr)  # the target stays the task's own response


def test_fraction_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="sft.correction_fraction"):
        load_config("configs/tiny.yaml", ["sft.correction_fraction=1.5"])
