"""The CIPO loss (CIPO.md step 9) as pure JAX functions. The advantages it reads are computed on the
host by `cipo/step.py`.

    L = L_pg(original stream, A) + alpha_corr * L_pg(correction stream, A')
        + gamma_nll * L_nll(successful corrections of failed sources) + beta_kl * KL(pi_theta || pi_ref)

GRPO is this same function with alpha_corr = gamma_nll = 0 (and no correction rows).

Every term is `masked_sum_k / norm_k`, where `norm_k` comes from `loss_normalisers` evaluated ONCE
over the whole rollout batch (all micro-batches, all data-parallel shards). The loss of a
micro-batch is therefore a partial sum of the big-batch loss, and summing micro-batch gradients
gives the big-batch gradient exactly (tunix `aggregate_loss` style, not a mean of means).

Row layout (`LossBatch`): one row = prompt + completion, right-padded to T; `completion_mask`
marks the generated tokens that count. For a correction row the prompt is the correction prompt
c_s = T(x_b, y_{b,i}), so the quoted failed attempt is never inside any mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Float, Int

# The registries are part of the loss's interface: `from cipo_jax.cipo.loss import register_aggregation`.
from cipo_jax.cipo.choices import AGGREGATIONS, KL_ESTIMATORS, get_aggregation, register_aggregation  # noqa: F401
from cipo_jax.cipo.step import CORRECTION
from cipo_jax.config import Config

# The metrics `cipo_loss` returns (each a share of its global-batch value).
LOSS_METRICS = ("loss", "loss_pg", "loss_corr", "loss_nll", "kl", "entropy", "clip_frac")


# ------------------------------------------------------------------------ per-token log-probs
def _logp_and_entropy(
    logits: Float[Array, "P V"], targets: Int[Array, "P"]
) -> tuple[Float[Array, "P"], Float[Array, "P"]]:
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)  # (P,)
    target_logit = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    probs = jnp.exp(logits - lse[:, None])  # (P, V)
    entropy = lse - jnp.sum(probs * logits, axis=-1)
    return target_logit - lse, entropy


def token_logprobs(
    logits: Float[Array, "N T V"], tokens: Int[Array, "N T"], *, chunk_size: int | None = None
) -> tuple[Float[Array, "N T"], Float[Array, "N T"]]:
    """logp[:, t] = log p(tokens[:, t] | tokens[:, <t]) from logits[:, t-1]; entropy of that same
    distribution. Column 0 has no predictor and is 0. Computed in fp32.

    chunk_size: positions per chunk; the fp32 softmax then only ever exists for one chunk, and
    the backward pass recomputes it per chunk (jax.checkpoint) instead of storing [N, T, V].
    """
    N, T, V = logits.shape
    if tokens.shape != (N, T):
        raise ValueError(f"token_logprobs: tokens shape {tokens.shape} != logits leading shape {(N, T)}")
    pred = logits[:, :-1].reshape(N * (T - 1), V)  # position t-1 predicts token t
    targets = tokens[:, 1:].reshape(N * (T - 1))
    if chunk_size is None or chunk_size >= pred.shape[0]:
        logp, entropy = _logp_and_entropy(pred, targets)
    else:
        P = pred.shape[0]
        n_chunks = -(-P // chunk_size)
        pad = n_chunks * chunk_size - P
        pred = jnp.pad(pred, ((0, pad), (0, 0))).reshape(n_chunks, chunk_size, V)
        targets = jnp.pad(targets, (0, pad)).reshape(n_chunks, chunk_size)
        logp, entropy = jax.lax.map(jax.checkpoint(lambda a: _logp_and_entropy(*a)), (pred, targets))
        logp, entropy = logp.reshape(-1)[:P], entropy.reshape(-1)[:P]
    first = jnp.zeros((N, 1), jnp.float32)
    return (
        jnp.concatenate([first, logp.reshape(N, T - 1)], axis=1),
        jnp.concatenate([first, entropy.reshape(N, T - 1)], axis=1),
    )


# ----------------------------------------------------------------------------------- the batch
@struct.dataclass
class LossBatch:
    """One optimisation batch; N rows of T tokens (see the module docstring)."""

    tokens: Int[Array, "N T"]
    completion_mask: Float[Array, "N T"]  # 1 on generated tokens whose log-prob counts
    old_logp: Float[Array, "N T"]  # log pi_old from sampling
    ref_logp: Float[Array, "N T"]  # log pi_ref (zeros when beta_kl = 0)
    advantages: Float[Array, "N"]  # A (stream 0) or A' (stream 1)
    stream: Int[Array, "N"]  # ORIGINAL or CORRECTION (cipo/step.py)
    nll_weight: Float[Array, "N"]  # 1 for a successful correction of a failed source, else 0

    @classmethod
    def create(cls, tokens, completion_mask, old_logp, advantages, stream, nll_weight,
               ref_logp=None) -> "LossBatch":
        tokens = jnp.asarray(tokens, jnp.int32)
        return cls(
            tokens=tokens,
            completion_mask=jnp.asarray(completion_mask, jnp.float32),
            old_logp=jnp.asarray(old_logp, jnp.float32),
            ref_logp=jnp.zeros(tokens.shape, jnp.float32) if ref_logp is None
            else jnp.asarray(ref_logp, jnp.float32),
            advantages=jnp.asarray(advantages, jnp.float32),
            stream=jnp.asarray(stream, jnp.int32),
            nll_weight=jnp.asarray(nll_weight, jnp.float32),
        )

    @classmethod
    def for_sft(cls, tokens, completion_mask) -> "LossBatch":
        """A batch for `sft_loss`: only tokens and mask matter."""
        N = jnp.shape(tokens)[0]
        zeros_nt = jnp.zeros(jnp.shape(tokens), jnp.float32)
        return cls.create(tokens, completion_mask, zeros_nt, jnp.zeros(N), jnp.zeros(N, jnp.int32),
                          jnp.ones(N))

    def slice(self, start: int, stop: int) -> "LossBatch":
        """Rows [start, stop): a micro-batch."""
        return jax.tree.map(lambda x: x[start:stop], self)


# ------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class LossConfig:
    """The static knobs of the loss (hashable, so it can be a jit static argument)."""

    eps_low: float = 0.2
    eps_high: float = 0.2
    aggregation: str = "token-mean"
    alpha_corr: float = 1.0
    gamma_nll: float = 0.1
    beta_kl: float = 0.0
    kl_estimator: str = "k3"

    def __post_init__(self):
        get_aggregation(self.aggregation)
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"unknown kl_estimator {self.kl_estimator!r}; known: {', '.join(KL_ESTIMATORS)}")
        if self.eps_low < 0 or self.eps_high < 0:
            raise ValueError(f"clip ranges must be >= 0, got eps_low={self.eps_low}, eps_high={self.eps_high}")

    @property
    def trains_corrections(self) -> bool:
        return self.alpha_corr != 0.0 or self.gamma_nll != 0.0


def loss_config(cfg: Config) -> LossConfig:
    """LossConfig from the run config; C = 0 switches the correction terms off (GRPO)."""
    corrections = cfg.cipo.C > 0
    return LossConfig(
        eps_low=cfg.grpo.eps_low,
        eps_high=cfg.grpo.eps_high,
        aggregation=cfg.grpo.aggregation,
        alpha_corr=cfg.cipo.alpha_corr if corrections else 0.0,
        gamma_nll=cfg.cipo.gamma_nll if corrections else 0.0,
        beta_kl=cfg.grpo.beta_kl,
        kl_estimator=cfg.grpo.kl_estimator,
    )


# ------------------------------------------------------------------------------ masks & norms
@struct.dataclass
class TermMasks:
    pg: Float[Array, "N T"]  # original-stream tokens
    corr: Float[Array, "N T"]  # correction-stream tokens
    nll: Float[Array, "N T"]  # correction tokens of rows with nll_weight > 0, weighted
    trained: Float[Array, "N T"]  # tokens of every trained stream: KL, entropy, clip_frac


def term_masks(batch: LossBatch, cfg: LossConfig) -> TermMasks:
    mask = batch.completion_mask
    is_corr = (batch.stream == CORRECTION).astype(jnp.float32)[:, None]  # (N, 1)
    pg, corr = mask * (1.0 - is_corr), mask * is_corr
    # Correction rows with both coefficients at 0 are inert (not even KL-regularised), so CIPO
    # with alpha_corr = gamma_nll = 0 is GRPO exactly, whatever rows the batch carries.
    trained = mask if cfg.trains_corrections else pg
    return TermMasks(pg=pg, corr=corr, nll=corr * batch.nll_weight[:, None], trained=trained)


@struct.dataclass
class Normalisers:
    """Global denominators of the loss terms (each >= 1 so an empty term is 0, not NaN)."""

    pg: Float[Array, ""]
    corr: Float[Array, ""]
    nll: Float[Array, ""]
    tokens: Float[Array, ""]  # of TermMasks.trained


def loss_normalisers(batch_global: LossBatch, cfg: LossConfig) -> Normalisers:
    """Compute once over the WHOLE rollout batch, then pass to every micro-batch's `cipo_loss`."""
    masks = term_masks(batch_global, cfg)
    agg = get_aggregation(cfg.aggregation)
    counts = (agg(masks.pg)[1], agg(masks.corr)[1], jnp.sum(masks.nll), jnp.sum(masks.trained))
    return Normalisers(*(jnp.maximum(c, 1.0) for c in counts))


def _check_shapes(logp, batch: LossBatch) -> None:
    N, T = batch.tokens.shape
    for name in ("completion_mask", "old_logp", "ref_logp"):
        if getattr(batch, name).shape != (N, T):
            raise ValueError(f"LossBatch.{name} has shape {getattr(batch, name).shape}, expected {(N, T)}")
    for name in ("advantages", "stream", "nll_weight"):
        if getattr(batch, name).shape != (N,):
            raise ValueError(f"LossBatch.{name} has shape {getattr(batch, name).shape}, expected {(N,)}")
    if logp.shape != (N, T):
        raise ValueError(f"logp has shape {logp.shape}, expected {(N, T)} like batch.tokens")


# ------------------------------------------------------------------------------ step 9: loss
def cipo_loss(
    logp: Float[Array, "N T"],
    entropy: Float[Array, "N T"],
    batch: LossBatch,
    norms: Normalisers,
    cfg: LossConfig,
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """The CIPO loss of one micro-batch and its metrics, each a share of the global-batch value."""
    _check_shapes(logp, batch)
    if entropy.shape != logp.shape:
        raise ValueError(f"entropy has shape {entropy.shape}, expected {logp.shape} like logp")
    masks = term_masks(batch, cfg)
    weights = get_aggregation(cfg.aggregation)
    counted = batch.completion_mask > 0
    # where(), not a mask product: a padded position's exp(logp - old_logp) may overflow, and
    # inf * 0 would put NaN into the gradient.
    log_ratio = jnp.where(counted, logp - batch.old_logp, 0.0)
    ratio = jnp.exp(log_ratio)
    adv = batch.advantages[:, None]  # (N, 1)
    unclipped = -ratio * adv
    clipped = -jnp.clip(ratio, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high) * adv
    pg_token = jnp.maximum(unclipped, clipped)  # = -min(r A, clip(r) A)
    kl_token = KL_ESTIMATORS[cfg.kl_estimator](logp, jnp.where(counted, batch.ref_logp, logp))

    terms = {  # name: (coefficient, masked_sum / global normaliser)
        "loss_pg": (1.0, jnp.sum(pg_token * weights(masks.pg)[0]) / norms.pg),
        "loss_corr": (cfg.alpha_corr, jnp.sum(pg_token * weights(masks.corr)[0]) / norms.corr),
        "loss_nll": (cfg.gamma_nll, -jnp.sum(jnp.where(counted, logp, 0.0) * masks.nll) / norms.nll),
        "kl": (cfg.beta_kl, jnp.sum(kl_token * masks.trained) / norms.tokens),
    }
    # A zero coefficient drops its term from the graph (0 * NaN would still be NaN).
    loss = sum(coef * value for coef, value in terms.values() if coef != 0.0)
    metrics = {name: value for name, (_, value) in terms.items()}
    metrics["loss"] = loss
    metrics["entropy"] = jnp.sum(jax.lax.stop_gradient(entropy) * masks.trained) / norms.tokens
    metrics["clip_frac"] = jnp.sum((clipped > unclipped) * masks.trained) / norms.tokens
    return loss, metrics


def sft_loss(
    logp: Float[Array, "N T"], batch: LossBatch, num_tokens: Float[Array, ""] | None = None
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """Masked NLL over completion_mask (nll_weight ignored). num_tokens: the global count of
    completion tokens when accumulating micro-batches; default this batch's own count."""
    _check_shapes(logp, batch)
    mask = batch.completion_mask
    if num_tokens is None:
        num_tokens = jnp.sum(mask)
    loss = -jnp.sum(jnp.where(mask > 0, logp, 0.0) * mask) / jnp.maximum(num_tokens, 1.0)
    return loss, {"loss_sft": loss}
