"""Group normalisation of rewards, shared by the GRPO advantages (JAX, CIPO.md step 3) and the
correction advantages (NumPy, step 8).

Written against the array API (`x.__array_namespace__()`), so one implementation serves both
numpy and jax.numpy arrays; nothing here imports JAX.

Spread is the POPULATION standard deviation (ddof = 0) [ours]: it is defined for a group of one
(advantage 0, no NaN), and a group of identical rewards gets advantage exactly 0. verl uses the
unbiased (ddof = 1) estimate; the two differ by a factor sqrt(G / (G - 1)) on every advantage.
"""

from __future__ import annotations

from typing import Any

from jaxtyping import Float

# A numpy or jax.numpy array (jaxtyping's own `Array` would import JAX into host code).
Array = Any


def normalize_rows(
    values: Float[Array, "K L"],
    mask: Float[Array, "K L"] | None = None,
    *,
    std_normalize: bool = True,
    eps: float = 1e-6,
) -> Float[Array, "K L"]:
    """(v - mean_row) / (std_row + eps) over the masked entries of each row; 0 where masked out.

    Each row is one group. `std_normalize=False` only centres (Dr.GRPO).
    """
    xp = values.__array_namespace__()
    if values.ndim != 2:
        raise ValueError(f"normalize_rows: values must be 2-D (groups, members), got shape {values.shape}")
    if mask is None:
        mask = xp.ones_like(values)
    elif mask.shape != values.shape:
        raise ValueError(f"normalize_rows: mask shape {mask.shape} != values shape {values.shape}")
    count = xp.maximum(xp.sum(mask, axis=-1, keepdims=True), 1.0)  # (K, 1)
    mean = xp.sum(values * mask, axis=-1, keepdims=True) / count  # (K, 1)
    centred = (values - mean) * mask  # (K, L)
    if not std_normalize:
        return centred
    std = xp.sqrt(xp.sum(centred * centred, axis=-1, keepdims=True) / count)  # (K, 1)
    return centred / (std + eps)
