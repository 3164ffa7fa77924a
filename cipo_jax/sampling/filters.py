"""Choosing the next token from logits: greedy, temperature, top-k and nucleus (top-p).

Every knob is a traced array, so one compiled sampler serves any temperature, k or p.
Conventions (the RL ratio relies on them):
  - temperature == 0 is greedy (argmax, first index on ties);
  - top_k <= 0 or top_k >= V disables top-k; top_p >= 1 disables top-p;
  - top-k is applied first, then top-p over the renormalised top-k distribution (the order
    transformers uses); tokens tied with the last kept logit are kept too;
  - the returned logprob is log_softmax(logits / temperature) at the chosen token, WITHOUT
    the top-k/top-p filtering (raw model logprobs when temperature is 0 or 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


def filter_logits(logits: Float[Array, "B V"], top_k: Int[Array, ""], top_p: Float[Array, ""]) -> Float[Array, "B V"]:
    """Logits outside the top-k set and then outside the top-p nucleus become -inf."""
    vocab = logits.shape[-1]
    k = jnp.where((top_k > 0) & (top_k < vocab), top_k, vocab)

    def apply(logits_bv):
        sorted_bv = -jnp.sort(-logits_bv, axis=-1)  # descending
        in_top_k = jnp.arange(vocab) < k
        probs_bv = jax.nn.softmax(jnp.where(in_top_k, sorted_bv, -jnp.inf), axis=-1)
        mass_before_bv = jnp.cumsum(probs_bv, axis=-1) - probs_bv
        # A sorted token is kept while the mass strictly before it is below p; the first
        # token always is. p >= 1 keeps all of top-k, whatever the float rounding of cumsum.
        keep_bv = in_top_k & ((mass_before_bv < top_p) | (top_p >= 1.0))
        n_keep_b = jnp.sum(keep_bv, axis=-1)
        threshold_b = jnp.take_along_axis(sorted_bv, n_keep_b[:, None] - 1, axis=-1)
        return jnp.where(logits_bv >= threshold_b, logits_bv, -jnp.inf)

    active = (k < vocab) | (top_p < 1.0)
    # The sort over the vocabulary is the expensive part; skip it when nothing filters.
    return jax.lax.cond(active, apply, lambda x: x, logits)


def first_argmax(x: Float[Array, "B V"]) -> Int[Array, " B"]:
    """jnp.argmax over the last axis (first index of the maximum; a NaN counts as the maximum),
    as two plain reductions: XLA's CPU argmax is a variadic reduce that does not vectorise and
    cost ~1 ms per decode step over SmolLM2's vocabulary at batch 8."""
    vocab = x.shape[-1]
    top = jnp.max(x, axis=-1, keepdims=True)
    return jnp.min(jnp.where((x == top) | jnp.isnan(x), jnp.arange(vocab, dtype=jnp.int32), vocab), axis=-1)


def _logprob_at(scaled_bv: Float[Array, "B V"], token_b: Int[Array, " B"]) -> Float[Array, " B"]:
    """log_softmax(scaled)[token] without materialising the [B, V] log-softmax."""
    top = jax.lax.stop_gradient(jnp.max(scaled_bv, axis=-1, keepdims=True))
    log_z = jnp.log(jnp.sum(jnp.exp(scaled_bv - top), axis=-1))
    return jnp.take_along_axis(scaled_bv - top, token_b[:, None], axis=-1)[:, 0] - log_z


def sample_tokens(
    logits: Float[Array, "B V"],
    key: jax.Array,
    temperature: Float[Array, ""],
    top_k: Int[Array, ""],
    top_p: Float[Array, ""],
) -> tuple[Int[Array, " B"], Float[Array, " B"]]:
    """One token per row and its logprob (see the module docstring for the conventions)."""
    logits = logits.astype(jnp.float32)

    def greedy(_):
        token_b = first_argmax(logits)
        return token_b, _logprob_at(logits, token_b)

    def stochastic(_):
        scaled_bv = logits / temperature
        # Gumbel-max, the draw jax.random.categorical makes from the same key.
        noise_bv = jax.random.gumbel(key, scaled_bv.shape, scaled_bv.dtype)
        token_b = first_argmax(noise_bv + filter_logits(scaled_bv, top_k, top_p))
        return token_b, _logprob_at(scaled_bv, token_b)

    return jax.lax.cond(temperature > 0, stochastic, greedy, None)


def is_stop(tokens: Int[Array, " B"], stop_tokens: Int[Array, " K"]) -> Bool[Array, " B"]:
    """Whether each token is a stop token; stop_tokens is padded with -1, which matches nothing."""
    return jnp.any(tokens[:, None] == stop_tokens[None, :], axis=-1)
