"""sampling.recompute_logprobs: log pi_old from the training forward instead of the sampler.

In fp32 the two agree to 1e-4, so recomputing changes nothing; in bf16 they differ (the gap is
measured and logged), and the first update, taking log pi_old from its own forward, has a ratio
of exactly 1 (its `kl` metric, without a reference model the drift from pi_old, is then 0).
"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cipo_jax.cipo.step import Row
from cipo_jax.config import ConfigError, load_config, save_config
from cipo_jax.sampling import generate
from cipo_jax.train.trainer import GAP_METRICS, Trainer, logprob_gap_metrics, recomputed_old_logp, task_stream

SMALL = Path(__file__).with_name("small.yaml")


@pytest.fixture(scope="module")
def trainers(tmp_path_factory):
    """trainers(dtype): one small-config trainer per compute dtype, made once per module."""
    made: dict[str, Trainer] = {}

    def get(dtype: str) -> Trainer:
        if dtype not in made:
            made[dtype] = Trainer(load_config(SMALL, [
                f"run.run_dir={tmp_path_factory.mktemp(dtype)}", "sft.steps=0", "optim.warmup_steps=0",
                "sampling.temperature=0.7", f"model.dtype={dtype}"]), progress_bar=False)
        return made[dtype]

    yield get
    for trainer in made.values():
        trainer.close()


def _rows(trainer: Trainer, weight_dtype: str | None = None) -> list[Row]:
    """Rollouts of the trainer's policy (random prompts, random advantages: a non-zero gradient)."""
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, trainer.model.config.vocab_size, size=k).tolist() for k in (4, 7, 5, 9)]
    out = generate(trainer.current_model(), prompts, max_new_tokens=trainer.cfg.sampling.max_new_tokens, n=4,
                   temperature=trainer.cfg.sampling.temperature, seed=1, mesh=trainer.mesh, weight_dtype=weight_dtype)
    advantages = rng.normal(size=len(out.tokens))
    return [Row(prompts[i], tokens, logprobs, advantage=float(a))
            for i, tokens, logprobs, a in zip(out.prompt_index, out.tokens, out.logprobs, advantages)]


def _update(trainer: Trainer, rows: list[Row], recompute: bool) -> tuple[dict[str, float], list[np.ndarray]]:
    """One step's update of `rows` from the trainer's current state, which is left as it was."""
    start = trainer.state
    trainer.state = jax.tree.map(jnp.copy, start)  # the update donates its input state
    trainer.cfg = dataclasses.replace(
        trainer.cfg, sampling=dataclasses.replace(trainer.cfg.sampling, recompute_logprobs=recompute))
    metrics, _ = trainer._optimise(rows, 0)
    params = [np.asarray(x) for x in jax.tree.leaves(trainer.state.params)]
    trainer.state = start
    return metrics, params


def test_fp32_recompute_equals_the_sampler_and_leaves_the_update_unchanged(trainers):
    trainer = trainers("float32")
    rows = _rows(trainer)
    on, params_on = _update(trainer, rows, recompute=True)
    off, params_off = _update(trainer, rows, recompute=False)
    assert not set(GAP_METRICS) & set(off)
    assert on["logprob_gap_max"] <= 1e-4
    start = [np.asarray(x) for x in jax.tree.leaves(trainer.state.params)]
    assert any(not np.array_equal(a, b) for a, b in zip(params_on, start))  # the update moved them
    assert on["grad_norm"] == pytest.approx(off["grad_norm"], rel=1e-5)
    # Adam's first step is about lr * sign(g) (lr 3e-4): where g is near 0, a 1e-7 change of the
    # ratio moves that parameter's step by up to a few 1e-6.
    for a, b in zip(params_on, params_off):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_bf16_gap_is_measured_and_the_first_ratio_is_exactly_one(trainers):
    trainer = trainers("bfloat16")
    rows = _rows(trainer)
    on, _ = _update(trainer, rows, recompute=True)
    off, _ = _update(trainer, rows, recompute=False)
    assert 0.0 < on["logprob_gap_mean"] <= on["logprob_gap_max"] < np.inf  # reported in docs/performance.md
    # "kl" is the drift from pi_old here (no reference model): 0 only when every ratio is exactly 1.
    assert on["kl"] == 0.0 and on["clip_frac"] == 0.0
    assert off["kl"] > 0.0  # the sampler's bf16 log-probs are not the update's


def test_bf16_rollout_weights_gap_is_small_and_recompute_removes_it(trainers):
    """sampling.weight_dtype=bfloat16 with a float32 policy: the sampler's log-probs are off by the
    weights' rounding (measured, small), and recomputing makes the first ratio exactly 1."""
    trainer = trainers("float32")
    rows = _rows(trainer, weight_dtype="bfloat16")
    on, _ = _update(trainer, rows, recompute=True)
    off, _ = _update(trainer, rows, recompute=False)
    assert 0.0 < on["logprob_gap_mean"] <= on["logprob_gap_max"] < 0.05
    assert on["kl"] == 0.0 and off["kl"] > 0.0


def test_rollout_worker_hands_the_weight_dtype_to_the_sampler(trainers, monkeypatch):
    from cipo_jax.cipo.correction import ReplayState
    from cipo_jax.train import rollout
    from cipo_jax.verifiers import VerifierPool

    trainer, seen = trainers("float32"), []
    real = rollout.generate

    def spy(*args, **kwargs):
        seen.append(kwargs["weight_dtype"])
        return real(*args, **kwargs)

    monkeypatch.setattr(rollout, "generate", spy)
    tasks = task_stream(trainer.tasks, 0, 0, 2)
    with VerifierPool(workers=1) as pool:
        for dtype in ("float32", "bfloat16"):
            cfg = dataclasses.replace(trainer.cfg, sampling=dataclasses.replace(trainer.cfg.sampling, weight_dtype=dtype))
            seen.clear()
            rollout.RolloutWorker(cfg, trainer.tokenizer, pool).collect(
                trainer.current_model(), tasks, step_seed=1, replay=ReplayState.initial(cfg))
            assert seen and set(seen) == {dtype}


def test_recomputed_old_logp_replaces_counted_tokens_only():
    sampler = np.array([[0.0, -1.0, -2.0, -3.0]])
    recomputed = np.array([[-9.0, -1.5, -2.0, -9.0]])
    mask = np.array([[0.0, 1.0, 1.0, 0.0]])
    old, gap = recomputed_old_logp(sampler, recomputed, mask)
    np.testing.assert_array_equal(old, [[0.0, -1.5, -2.0, -3.0]])
    np.testing.assert_array_equal(gap, [0.5, 0.0])
    metrics = logprob_gap_metrics([gap, np.array([0.1])])
    assert metrics == pytest.approx({"logprob_gap_mean": 0.2, "logprob_gap_max": 0.5})
    assert all(np.isnan(v) for v in logprob_gap_metrics([np.zeros(0)]).values())


def test_config_key_round_trips(tmp_path):
    assert load_config(None, []).sampling.recompute_logprobs is False
    cfg = load_config(None, ["sampling.recompute_logprobs=true"])
    assert cfg.sampling.recompute_logprobs is True
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    with pytest.raises(ConfigError, match="recompute_logprob"):
        load_config(None, ["sampling.recompute_logprob=true"])
    assert load_config(None, ["sampling.weight_dtype=bfloat16"]).sampling.weight_dtype == "bfloat16"
    with pytest.raises(ConfigError, match="weight_dtype"):
        load_config(None, ["sampling.weight_dtype=int8"])
