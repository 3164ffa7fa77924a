"""cipo_jax.cipo.loss against the independent float64 NumPy reference (tests/numpy_reference.py)."""

import zlib
from dataclasses import asdict, replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_reference as ref
from cipo_jax.cipo.loss import (
    AGGREGATIONS, LOSS_METRICS, LossBatch, LossConfig, cipo_loss, loss_config, loss_normalisers, sft_loss,
    token_logprobs,
)
from cipo_jax.cipo.step import grpo_advantages
from cipo_jax.config import load_config

N, T, V = 8, 10, 5
TOL = 1e-5

# Term configurations: each term alone on top of the always-on original-stream term, and all.
TERMS = {
    "pg": dict(alpha_corr=0.0, gamma_nll=0.0, beta_kl=0.0),
    "corr": dict(alpha_corr=0.7, gamma_nll=0.0, beta_kl=0.0),
    "nll": dict(alpha_corr=0.0, gamma_nll=0.3, beta_kl=0.0),
    "kl_k1": dict(alpha_corr=0.0, gamma_nll=0.0, beta_kl=0.2, kl_estimator="k1"),
    "kl_k3": dict(alpha_corr=0.0, gamma_nll=0.0, beta_kl=0.2, kl_estimator="k3"),
    "all": dict(alpha_corr=0.7, gamma_nll=0.3, beta_kl=0.2, kl_estimator="k3"),
}


def random_batch(rng, n=N, streams=(0, 0, 1, 1, 1, 0, 0, 1), nll=(0, 0, 1, 0, 1, 0, 0, 0)):
    """Ragged rows: a prompt of random length, then a completion of random length (row 5: none),
    right padding. old/ref log-probs are jittered so ratios fall on both sides of the clip range."""
    logits = rng.normal(size=(n, T, V)) * 1.5
    tokens = rng.integers(0, V, size=(n, T))
    mask = np.zeros((n, T))
    for i in range(n):
        start = rng.integers(1, T // 2)
        stop = start if i == 5 else rng.integers(start + 1, T + 1)
        mask[i, start:stop] = 1.0
    logp, _ = ref.token_logprobs(logits, tokens)
    batch = dict(
        tokens=tokens, completion_mask=mask,
        old_logp=(logp + rng.normal(scale=0.5, size=(n, T))) * mask,
        ref_logp=(logp + rng.normal(scale=0.3, size=(n, T))) * mask,
        advantages=rng.normal(size=n), stream=np.array(streams[:n]),
        nll_weight=np.array(nll[:n], float),
    )
    return logits, batch


def to_jax(batch: dict) -> LossBatch:
    return LossBatch.create(**batch)


def ref_cfg(cfg: LossConfig) -> dict:
    return asdict(cfg)


def jax_loss_of_logp(batch, cfg):
    jb = to_jax(batch)
    norms = loss_normalisers(jb, cfg)
    return lambda logp, ent: cipo_loss(logp, ent, jb, norms, cfg)


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_token_logprobs_match_reference(chunk_size):
    logits, batch = random_batch(np.random.default_rng(0))
    logp, ent = token_logprobs(jnp.asarray(logits, jnp.float32), jnp.asarray(batch["tokens"]),
                               chunk_size=chunk_size)
    want_logp, want_ent = ref.token_logprobs(logits, batch["tokens"])
    np.testing.assert_allclose(logp, want_logp, atol=TOL)
    np.testing.assert_allclose(ent, want_ent, atol=TOL)
    assert np.all(np.asarray(logp[:, 0]) == 0)  # nothing predicts the first token
    # The chunked, rematerialised path has the same gradient as the one-shot path.
    w = jnp.asarray(np.random.default_rng(1).normal(size=(N, T)), jnp.float32)

    def weighted(lg, chunk):
        lp, en = token_logprobs(lg, jnp.asarray(batch["tokens"]), chunk_size=chunk)
        return jnp.sum(w * (lp + 0.5 * en))

    lg = jnp.asarray(logits, jnp.float32)
    np.testing.assert_allclose(jax.grad(weighted)(lg, chunk_size), jax.grad(weighted)(lg, None), atol=1e-6)


@pytest.mark.parametrize("std_normalize", [True, False])
def test_grpo_advantages_match_plain_loop(std_normalize):
    rewards = np.random.default_rng(1).integers(0, 2, size=(7, 5)).astype(float)
    rewards[0] = 1.0  # a zero-variance group
    got = grpo_advantages(jnp.asarray(rewards), std_normalize=std_normalize)
    np.testing.assert_allclose(got, ref.grpo_advantages(rewards, std_normalize), atol=TOL)
    assert np.all(np.asarray(got[0]) == 0.0)


def test_grpo_advantages_hand_case():
    # Rewards (1, 0, 0, 0): mean 1/4; population variance = (9/16 + 3 * 1/16) / 4 = 3/16,
    # std = sqrt(3)/4 ~= 0.4330; advantages (3/4, -1/4, -1/4, -1/4) / 0.4330 = (1.7321, -0.5774 x3).
    got = np.asarray(grpo_advantages(jnp.array([[1.0, 0, 0, 0]]), eps=0.0))
    np.testing.assert_allclose(got, [[np.sqrt(3), -1 / np.sqrt(3), -1 / np.sqrt(3), -1 / np.sqrt(3)]], rtol=1e-6)
    # Dr.GRPO only centres.
    np.testing.assert_allclose(grpo_advantages(jnp.array([[1.0, 0, 0, 0]]), std_normalize=False),
                               [[0.75, -0.25, -0.25, -0.25]], atol=1e-7)


@pytest.mark.parametrize("terms", list(TERMS))
@pytest.mark.parametrize("aggregation", sorted(AGGREGATIONS))
def test_loss_and_logp_gradient_match_reference(aggregation, terms):
    rng = np.random.default_rng(zlib.crc32(f"{aggregation}/{terms}".encode()))
    logits, batch = random_batch(rng)
    cfg = LossConfig(aggregation=aggregation, eps_low=0.2, eps_high=0.28, **TERMS[terms])
    logp, ent = ref.token_logprobs(logits, batch["tokens"])
    f = jax_loss_of_logp(batch, cfg)
    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(logp, jnp.float32),
                                                                jnp.asarray(ent, jnp.float32))
    want_loss, want_metrics = ref.cipo_loss(logp, ent, batch, ref_cfg(cfg))
    assert abs(float(loss) - want_loss) <= TOL
    assert set(metrics) == set(LOSS_METRICS)  # the names the trainer logs are the loss's own
    for name, value in want_metrics.items():
        assert abs(float(metrics[name]) - value) <= TOL, name
    want_grad = ref.finite_difference_grad(lambda lp: ref.cipo_loss(lp, ent, batch, ref_cfg(cfg))[0], logp)
    np.testing.assert_allclose(grad, want_grad, atol=TOL)
    assert 0.0 < want_metrics["clip_frac"] < 1.0  # both clip regimes are exercised


@pytest.mark.parametrize("aggregation", sorted(AGGREGATIONS))
def test_logits_gradient_through_token_logprobs_matches_reference(aggregation):
    logits, batch = random_batch(np.random.default_rng(2))
    cfg = LossConfig(aggregation=aggregation, **TERMS["all"])
    f = jax_loss_of_logp(batch, cfg)

    def loss_of_logits(lg):
        return f(*token_logprobs(lg, jnp.asarray(batch["tokens"])))[0]

    grad = jax.grad(loss_of_logits)(jnp.asarray(logits, jnp.float32))

    def ref_loss_of_logits(lg):
        return ref.cipo_loss(*ref.token_logprobs(lg, batch["tokens"]), batch, ref_cfg(cfg))[0]

    np.testing.assert_allclose(grad, ref.finite_difference_grad(ref_loss_of_logits, logits), atol=TOL)


def correction_rows():
    """Two correction rows laid out as c_s + z: the original prompt (3 tokens), the quoted failed
    attempt (4), the review instruction (2), then the correction (4 generated tokens) and padding.
    The quoted attempt repeats the correction's tokens, so a mask by token identity would fail."""
    prompt, attempt, instruction, correction = [1, 2, 3], [4, 5, 6, 7], [8, 9], [4, 5, 6, 7]
    row = prompt + attempt + instruction + correction + [0, 0]
    tokens = np.array([row, row])
    mask = np.zeros(tokens.shape)
    start = len(prompt) + len(attempt) + len(instruction)
    mask[:, start:start + len(correction)] = 1.0
    n, t = tokens.shape
    batch = dict(tokens=tokens, completion_mask=mask, old_logp=np.zeros((n, t)), ref_logp=np.zeros((n, t)),
                 advantages=np.zeros(n), stream=np.ones(n, int), nll_weight=np.ones(n))
    return batch, len(prompt) + len(attempt), start


def test_nll_mask_covers_correction_tokens_only():
    batch, attempt_end, start = correction_rows()
    n, t = batch["tokens"].shape
    logits = np.random.default_rng(3).normal(size=(n, t, 12))
    cfg = LossConfig(alpha_corr=0.0, gamma_nll=1.0)
    f = jax_loss_of_logp(batch, cfg)

    def nll_of_logits(lg):
        return f(*token_logprobs(lg, jnp.asarray(batch["tokens"])))[1]["loss_nll"]

    value_and_grad = jax.jit(jax.value_and_grad(nll_of_logits))
    nll, grad = value_and_grad(jnp.asarray(logits, jnp.float32))
    logp, _ = ref.token_logprobs(logits, batch["tokens"])
    assert abs(float(nll) - ref.sft_loss(logp, batch["completion_mask"])) <= TOL

    # Logits at the prompt and quoted-attempt positions (and the padding) predict no correction
    # token: changing them changes neither the NLL nor its gradient.
    bumped = logits.copy()
    bumped[:, :attempt_end] += np.random.default_rng(4).normal(scale=5.0, size=(n, attempt_end, 12))
    bumped[:, start + 4:] += 3.0 * np.arange(12)
    nll2, grad2 = value_and_grad(jnp.asarray(bumped, jnp.float32))
    assert float(nll2) == float(nll)
    np.testing.assert_array_equal(grad2, grad)
    assert np.all(np.asarray(grad)[:, :attempt_end] == 0.0)

    # Logits predicting a correction token (position start-1 predicts token `start`) do count.
    moved = logits.copy()
    moved[:, start - 1] += np.random.default_rng(5).normal(scale=2.0, size=(n, 12))
    nll3, grad3 = value_and_grad(jnp.asarray(moved, jnp.float32))
    assert abs(float(nll3) - float(nll)) > 1e-3
    assert np.max(np.abs(np.asarray(grad3) - np.asarray(grad))) > 1e-3


@pytest.mark.parametrize("aggregation", sorted(AGGREGATIONS))
def test_microbatch_sum_equals_big_batch(aggregation):
    """Four micro-batches with the global normalisers: losses, metrics and gradients (per-row
    logits and a shared vocabulary bias, as a parameter seen by every row) add up to the big batch."""
    logits, batch = random_batch(np.random.default_rng(6), n=8, streams=(0, 1, 0, 1, 1, 0, 0, 1),
                                 nll=(0, 1, 0, 0, 1, 0, 0, 1))
    cfg = LossConfig(aggregation=aggregation, **TERMS["all"])
    big = to_jax(batch)
    norms = loss_normalisers(big, cfg)

    def loss(params, b):
        lg, bias = params
        logp, ent = token_logprobs(lg + bias, b.tokens)
        return cipo_loss(logp, ent, b, norms, cfg)

    grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
    params = (jnp.asarray(logits, jnp.float32), jnp.zeros(V))
    (big_loss, big_metrics), (big_g_logits, big_g_bias) = grad_fn(params, big)
    total_loss, total_metrics, g_bias, g_logits = 0.0, {k: 0.0 for k in big_metrics}, 0.0, []
    for k in range(4):
        micro = big.slice(2 * k, 2 * k + 2)
        (l, m), (gl, gb) = grad_fn((params[0][2 * k:2 * k + 2], params[1]), micro)
        total_loss += l
        total_metrics = {name: total_metrics[name] + m[name] for name in m}
        g_bias += gb
        g_logits.append(gl)
    assert abs(float(total_loss) - float(big_loss)) <= 1e-6
    for name in big_metrics:
        assert abs(float(total_metrics[name]) - float(big_metrics[name])) <= 1e-6, name
    np.testing.assert_allclose(g_bias, big_g_bias, atol=1e-7)
    np.testing.assert_allclose(jnp.concatenate(g_logits), big_g_logits, atol=1e-7)
    assert float(jnp.abs(big_g_bias).max()) > 1e-3  # the check is not vacuous


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-sum"])
def test_grpo_is_cipo_with_zero_correction_coefficients(aggregation):
    """GRPO (original rows only) and CIPO with correction rows present but alpha_corr = gamma_nll
    = 0 give the same loss and gradient, KL term included."""
    _, batch = random_batch(np.random.default_rng(7), n=6)
    batch["stream"] = np.array([0, 0, 0, 1, 1, 1])
    batch["nll_weight"] = np.array([0, 0, 0, 1, 0, 1.0])
    logp, ent = ref.token_logprobs(np.random.default_rng(8).normal(size=(6, T, V)), batch["tokens"])
    cfg = LossConfig(aggregation=aggregation, alpha_corr=0.0, gamma_nll=0.0, beta_kl=0.1)
    grpo_batch = {k: v[:3] for k, v in batch.items()}

    def run(b, lp, en):
        return jax.value_and_grad(jax_loss_of_logp(b, cfg), has_aux=True)(
            jnp.asarray(lp, jnp.float32), jnp.asarray(en, jnp.float32))

    (l_grpo, _), g_grpo = run(grpo_batch, logp[:3], ent[:3])
    (l_cipo, _), g_cipo = run(batch, logp, ent)
    assert float(l_grpo) == float(l_cipo)
    np.testing.assert_array_equal(g_cipo[:3], g_grpo)
    assert np.all(np.asarray(g_cipo[3:]) == 0.0)


def test_sft_loss_matches_reference():
    logits, batch = random_batch(np.random.default_rng(9))
    logp, _ = ref.token_logprobs(logits, batch["tokens"])
    b = LossBatch.for_sft(batch["tokens"], batch["completion_mask"])
    loss, _ = sft_loss(jnp.asarray(logp, jnp.float32), b)
    assert abs(float(loss) - ref.sft_loss(logp, batch["completion_mask"])) <= TOL


def test_loss_config_from_run_config():
    cfg = load_config(None, ["cipo.C=0", "grpo.aggregation=seq-mean-token-sum", "grpo.beta_kl=0.05"])
    lc = loss_config(cfg)
    assert (lc.alpha_corr, lc.gamma_nll, lc.beta_kl, lc.aggregation) == (0.0, 0.0, 0.05, "seq-mean-token-sum")
    lc = loss_config(load_config(None, ["cipo.alpha_corr=0.5", "cipo.gamma_nll=0.2"]))
    assert (lc.alpha_corr, lc.gamma_nll) == (0.5, 0.2)


def test_run_config_accepts_exactly_the_registered_choices(monkeypatch):
    """The config reads the registries: a newly registered aggregation is a valid
    grpo.aggregation with no config edit, and a wrong name lists what is registered."""
    from cipo_jax.configlib import ConfigError

    with pytest.raises(ConfigError, match="grpo.aggregation: 'probe' is not one of"):
        load_config(None, ["grpo.aggregation=probe"])
    monkeypatch.setitem(AGGREGATIONS, "probe", AGGREGATIONS["token-mean"])
    assert loss_config(load_config(None, ["grpo.aggregation=probe"])).aggregation == "probe"
    with pytest.raises(ConfigError, match=r"grpo.kl_estimator: 'k2' is not one of \['k1', 'k3'\]"):
        load_config(None, ["grpo.kl_estimator=k2"])


def test_bad_inputs_fail_with_named_errors():
    with pytest.raises(ValueError, match="unknown aggregation 'seq-sum'; known: seq-mean-token-mean"):
        LossConfig(aggregation="seq-sum")
    with pytest.raises(ValueError, match="unknown kl_estimator"):
        LossConfig(kl_estimator="k2")
    _, batch = random_batch(np.random.default_rng(10))
    f = jax_loss_of_logp(batch, LossConfig())
    with pytest.raises(ValueError, match=r"logp has shape \(8, 9\), expected \(8, 10\)"):
        f(jnp.zeros((N, T - 1)), jnp.zeros((N, T - 1)))
    with pytest.raises(ValueError, match="LossBatch.advantages"):
        b = replace(to_jax(batch), advantages=jnp.zeros(N + 1))
        cipo_loss(jnp.zeros((N, T)), jnp.zeros((N, T)), b, loss_normalisers(to_jax(batch), LossConfig()),
                  LossConfig())
