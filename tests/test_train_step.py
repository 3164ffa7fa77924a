"""The jitted update: accumulation, sharding and the GRPO/CIPO code path give the same step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cipo_jax.cipo.loss import LossBatch, LossConfig, loss_normalisers
from cipo_jax.config import MeshConfig, OptimConfig
from cipo_jax.models import init_model, tiny_config
from cipo_jax.sharding import make_mesh, shard_model
from cipo_jax.train import step as step_lib

V, T, N = 64, 16, 16


def _model():
    return init_model(tiny_config(vocab_size=V, hidden_size=32, intermediate_size=64, num_heads=4,
                                  num_kv_heads=2, head_dim=8, num_layers=2), seed=3)


def _batch(rows=N, seed=0, with_corrections=True) -> LossBatch:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, (rows, T))
    prompt_len = rng.integers(2, 8, rows)
    comp_len = rng.integers(1, T - 8, rows)
    pos = np.arange(T)
    mask = ((pos >= prompt_len[:, None]) & (pos < (prompt_len + comp_len)[:, None])).astype(np.float32)
    old = np.where(mask > 0, -rng.uniform(0.5, 5.0, (rows, T)), 0.0)
    stream = (rng.random(rows) < 0.4).astype(np.int32) if with_corrections else np.zeros(rows, np.int32)
    nll = ((stream == 1) & (rng.random(rows) < 0.5)).astype(np.float32)
    return LossBatch.create(tokens, mask, old, rng.normal(size=rows), stream, nll)


def _step(batch, accum, *, loss_cfg, mesh=None, completion_width=None, repeat=1, tx=None, at_pi_old=False):
    model = _model()
    if mesh is not None:
        model = shard_model(model, mesh)
    graphdef, params, rest = step_lib.split_model(model)
    tx = tx or step_lib.make_optimizer(OptimConfig(lr=1e-2, warmup_steps=0, schedule="constant"), 10)
    start = jax.tree.map(jnp.copy, params)  # the step donates (deletes) its input state
    state = step_lib.init_state(params, tx)
    update = step_lib.make_update(graphdef, rest, tx, loss_cfg=loss_cfg, temperature=0.7,
                                  completion_width=completion_width)
    norms = loss_normalisers(batch, loss_cfg)
    for _ in range(repeat):
        state, metrics = update(state, step_lib.split_micro(batch, accum, mesh), norms, at_pi_old=at_pi_old)
    return state, {k: float(v) for k, v in metrics.items()}, start


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


CFG = LossConfig(eps_low=0.2, eps_high=0.28, alpha_corr=0.7, gamma_nll=0.3, beta_kl=0.0)


def test_four_micro_batches_equal_one_big_batch():
    batch = _batch()
    one, m1, start = _step(batch, 1, loss_cfg=CFG)
    four, m4, _ = _step(batch, 4, loss_cfg=CFG)
    assert _max_diff(one.params, start) > 1e-4  # the update really moved the parameters
    assert _max_diff(one.params, four.params) <= 1e-5
    for k in ("loss", "loss_pg", "loss_corr", "loss_nll", "entropy", "grad_norm"):
        assert m1[k] == pytest.approx(m4[k], rel=1e-5, abs=1e-6), k


def test_sharded_step_equals_single_device():
    assert jax.device_count() == 8
    batch = _batch()
    single, _, _ = _step(batch, 2, loss_cfg=CFG)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded, _, _ = _step(batch, 2, loss_cfg=CFG, mesh=mesh)
    assert _max_diff(single.params, sharded.params) <= 1e-5
    # The parameters really are split across devices, not replicated.
    shards = [leaf.sharding for leaf in jax.tree.leaves(sharded.params)]
    assert any(not s.is_fully_replicated for s in shards)


def test_grpo_and_cipo_with_zero_correction_weights_give_the_same_update():
    batch = _batch(with_corrections=True)
    # GRPO (C = 0) sees only the original rollouts; CIPO with alpha = gamma = 0 sees all rows.
    keep = np.asarray(batch.stream) == 0
    grpo_batch = LossBatch.create(*(np.asarray(getattr(batch, f))[keep] for f in
                                    ("tokens", "completion_mask", "old_logp", "advantages", "stream", "nll_weight")))
    zero = LossConfig(eps_low=0.2, eps_high=0.28, alpha_corr=0.0, gamma_nll=0.0)
    a, ma, _ = _step(grpo_batch, 1, loss_cfg=zero)
    b, mb, _ = _step(batch, 1, loss_cfg=zero)
    # Same maths; only the batch shape (and so the float summation order) differs.
    assert _max_diff(a.params, b.params) <= 1e-6
    assert ma["loss"] == pytest.approx(mb["loss"], rel=1e-6)


def test_non_finite_update_is_skipped():
    batch = _batch()
    bad = batch.replace(advantages=batch.advantages.at[0].set(jnp.nan))
    new, metrics, start = _step(bad, 1, loss_cfg=CFG)
    assert metrics["skipped"] == 1.0
    assert _max_diff(new.params, start) == 0.0
    assert int(new.updates) == 0


@pytest.mark.parametrize("width", [T - 8, T + 5])  # the longest completion; past every row's end
def test_completion_window_gives_the_full_update(width):
    """Scoring only a window of W tokens from each row's first counted token changes nothing
    when W covers every completion, including windows clipped at the row end."""
    batch, sgd = _batch(), optax.sgd(1.0)  # parameter change = gradient (Adam's first step is sign-like)
    full, m_full, start = _step(batch, 2, loss_cfg=CFG, tx=sgd)
    windowed, m_win, _ = _step(batch, 2, loss_cfg=CFG, completion_width=width, tx=sgd)
    assert _max_diff(full.params, start) > 1e-4
    assert _max_diff(full.params, windowed.params) <= 1e-6
    for k in ("loss", "loss_pg", "loss_corr", "loss_nll", "entropy", "grad_norm"):
        assert m_win[k] == pytest.approx(m_full[k], rel=1e-5, abs=1e-6), k
    # A window too short for the longest completion drops tokens, and the test can see it.
    short, _, _ = _step(batch, 2, loss_cfg=CFG, completion_width=2, tx=sgd)
    assert _max_diff(full.params, short.params) > 1e-4


def test_at_pi_old_takes_every_ratio_against_the_steps_own_forward():
    batch = _batch()  # its old_logp are random, far from the model's
    _, own, _ = _step(batch, 2, loss_cfg=CFG, at_pi_old=True)
    _, given, _ = _step(batch, 2, loss_cfg=CFG)
    # Ratio 1 everywhere: nothing clipped, no drift from pi_old ("kl" without a KL term).
    assert own["clip_frac"] == 0.0 and own["kl"] == 0.0
    assert given["clip_frac"] > 0.0 and given["kl"] > 0.0


def test_logprobs_in_micro_batches_equal_one_forward():
    graphdef, params, rest = step_lib.split_model(_model())
    tokens = _batch().tokens
    whole, _ = step_lib.policy_logprobs(graphdef, params, rest, tokens, 0.7)
    micro = step_lib.make_logprobs(graphdef, rest, 0.7)(params, step_lib.split_micro(tokens, 4, None))
    np.testing.assert_allclose(micro.reshape(tokens.shape), whole, atol=1e-6)


@pytest.mark.parametrize("devices", [None, 1, 8], ids=["no_mesh", "one_device_mesh", "fsdp8_mesh"])
def test_later_updates_compile_nothing(devices):
    # The state the first update gets must be laid out as the update returns it. On a one-device
    # mesh (a single-CPU/GPU run) init_state's step counters kept a SingleDeviceSharding; on an
    # fsdp mesh the Adam moments were replicated and XLA returned some parameters resharded.
    mesh = None if devices is None else make_mesh(MeshConfig(), jax.devices()[:devices])
    model = _model() if mesh is None else shard_model(_model(), mesh)
    graphdef, params, rest = step_lib.split_model(model)
    tx = step_lib.make_optimizer(OptimConfig(lr=1e-2, warmup_steps=0, schedule="constant"), 10)
    state = step_lib.init_state(params, tx, mesh)
    update = step_lib.make_update(graphdef, rest, tx, loss_cfg=CFG, completion_width=T - 8)
    counts = []
    for seed in range(3):  # new rows each step, same shapes; at_pi_old is traced
        batch = _batch(seed=seed)
        micro = step_lib.split_micro(batch, 2, mesh)
        norms = loss_normalisers(batch, CFG)
        state, metrics = update(state, micro, norms, at_pi_old=seed == 1)
        counts.append((float(metrics["compiles"]), float(metrics["compile_s"])))
    assert counts[0][0] >= 1 and counts[0][1] > 0
    assert counts[0] == counts[1] == counts[2]  # all compiles happened in the first update


@pytest.mark.slow
def test_training_run_compiles_nothing_after_its_first_step(tmp_path, monkeypatch):
    """Three CIPO steps (corrections on) of the small run on a one-device mesh, as a single-device
    run has: sampler, log-probs and update all compile in step 1, and `compiles` stays put. No
    SFT (its compiles precede step 1 anyway): every row is counted, so each step still updates."""
    from cipo_jax.config import load_config
    from cipo_jax.train import trainer as trainer_lib
    from cipo_jax.train.metrics import read_metrics

    monkeypatch.setattr(trainer_lib, "make_mesh", lambda cfg: make_mesh(cfg, jax.devices()[:1]))
    cfg = load_config("tests/small.yaml", [f"run.run_dir={tmp_path}", "run.steps=3", "run.ckpt_every=10",
                                           "sft.steps=0"])
    trainer_lib.train(cfg, progress_bar=False)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["corr_count"] > 0 and np.isfinite(r["loss"]) for r in rows)  # corrections, an update each step
    assert [r["compiles"] for r in rows] == [rows[0]["compiles"]] * 3
