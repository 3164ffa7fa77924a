"""The loss's named choices: token aggregations and KL estimators. These registries are the only
lists of them: `LossConfig` looks names up here and the run config (`grpo.aggregation`,
`grpo.kl_estimator`) accepts exactly their keys. JAX only, no other project module, so the
config can read them without an import cycle.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from jaxtyping import Array, Float

KL_ESTIMATORS: dict[str, Callable[[Float[Array, "..."], Float[Array, "..."]], Float[Array, "..."]]] = {
    # Schulman's estimators of KL(pi_theta || pi_ref) from samples of pi_theta; d = log pi_ref - log pi_theta.
    "k1": lambda logp, ref_logp: logp - ref_logp,
    "k3": lambda logp, ref_logp: jnp.exp(ref_logp - logp) - (ref_logp - logp) - 1.0,  # >= 0, unbiased
}



# -------------------------------------------------------------------------------- aggregation
# An aggregation maps a token mask to (per-token weights, count): term = sum(x * weights) / count.
# The weights only use a row's own tokens, so they can be computed per micro-batch; the count is
# summed over the global batch by `loss_normalisers`.
Aggregation = Callable[[Float[Array, "N T"]], tuple[Float[Array, "N T"], Float[Array, ""]]]
AGGREGATIONS: dict[str, Aggregation] = {}


def register_aggregation(name: str) -> Callable[[Aggregation], Aggregation]:
    def register(fn: Aggregation) -> Aggregation:
        if name in AGGREGATIONS:
            raise ValueError(f"aggregation {name!r} is already registered")
        AGGREGATIONS[name] = fn
        return fn

    return register


def get_aggregation(name: str) -> Aggregation:
    if name not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {name!r}; known: {', '.join(sorted(AGGREGATIONS))}")
    return AGGREGATIONS[name]


def _rows_present(mask: Float[Array, "N T"]) -> Float[Array, ""]:
    return jnp.sum(jnp.any(mask > 0, axis=-1).astype(jnp.float32))


@register_aggregation("token-mean")
def _token_mean(mask):
    """Mean over every counted token of the batch (long sequences weigh more)."""
    return mask, jnp.sum(mask)


@register_aggregation("seq-mean-token-mean")
def _seq_mean_token_mean(mask):
    """Mean over tokens within each sequence, then mean over sequences."""
    length = jnp.sum(mask, axis=-1, keepdims=True)  # (N, 1)
    return mask / jnp.maximum(length, 1.0), _rows_present(mask)


@register_aggregation("seq-mean-token-sum")
def _seq_mean_token_sum(mask):
    """Sum over tokens within each sequence, mean over sequences (Dr.GRPO without its constant
    1/max_len factor, which is only a learning-rate rescale)."""
    return mask, _rows_present(mask)

