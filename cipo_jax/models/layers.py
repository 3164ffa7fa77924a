"""Pure functions of one decoder layer: RMSNorm, RoPE, grouped-query attention, SwiGLU; and the
per-row position selection in front of the output layer.

Shapes: B batch, T new tokens, S key/value slots, H query heads, K kv heads, G = H / K,
D head_dim, E hidden, F mlp width.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from cipo_jax.models.config import DecoderConfig

# Finite, so a query with no visible key (a padding row) gets a uniform softmax, not NaN.
_MASKED = -1e30


def rms_norm(x: Float[Array, "... E"], scale: Float[Array, "E"], eps: float) -> Float[Array, "... E"]:
    """RMSNorm computed in float32 whatever the input dtype (as transformers does)."""
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (scale.astype(jnp.float32) * x32).astype(x.dtype)


def rope_inv_freq(config: DecoderConfig) -> np.ndarray:
    """Inverse frequencies [D/2] with the config's theta and scaling rule (default, linear, llama3)."""
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    if config.rope_type == "linear":
        inv_freq = inv_freq / config.rope_factor
    elif config.rope_type == "llama3":
        # Llama 3.1: long wavelengths divided by factor, short ones kept, a smooth ramp between.
        factor, low, high = config.rope_factor, config.rope_low_freq_factor, config.rope_high_freq_factor
        old_len = config.rope_original_max_position
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv_freq = np.where(medium, smoothed, scaled)
    return inv_freq.astype(np.float32)


def apply_rope(
    x: Float[Array, "B T N D"], positions: Int[Array, "B T"], inv_freq: Float[Array, "D2"]
) -> Float[Array, "B T N D"]:
    """Rotary embedding in the half-split layout (transformers' rotate_half), in float32."""
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # (B, T, D/2)
    sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def attention(
    q: Float[Array, "B T H D"],
    k: Float[Array, "B K S D"],
    v: Float[Array, "B K S D"],
    mask: Bool[Array, "B T S"],
) -> Float[Array, "B T H D"]:
    """Grouped-query softmax attention: query head h reads kv head h // G. Keys and values are
    [B, K, S, D] (the cache layout), so both matmuls take them without a transpose."""
    b, t, h, d = q.shape
    kv_heads = k.shape[1]
    q = q.reshape(b, t, kv_heads, h // kv_heads, d).transpose(0, 2, 3, 1, 4)  # (B, K, G, T, D)
    scores = jnp.einsum("bkgtd,bksd->bkgts", q, k, preferred_element_type=jnp.float32) / math.sqrt(d)
    scores = jnp.where(mask[:, None, None], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bksd->bkgtd", probs, v)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


def matmul(x: Float[Array, "... E"], w: Float[Array, "E N"]) -> Float[Array, "... N"]:
    """x @ w in x's dtype. A weight narrower than x (bfloat16 weights for float32 rollouts) takes x
    rounded to its dtype and accumulates in float32: XLA's CPU kernels run that form 1.3x faster
    than a float32 matmul at batch 8, where a bf16 x bf16 -> bf16 product is ~10x slower."""
    if w.dtype == x.dtype:
        return x @ w
    return jnp.matmul(x.astype(w.dtype), w, preferred_element_type=jnp.float32).astype(x.dtype)


def swiglu(
    x: Float[Array, "B T E"], gate: Float[Array, "E F"], up: Float[Array, "E F"], down: Float[Array, "F E"]
) -> Float[Array, "B T E"]:
    return matmul(jax.nn.silu(matmul(x, gate)) * matmul(x, up), down)


def select_positions(x: Float[Array, "B T E"], at: Int[Array, "B P"]) -> Float[Array, "B P E"]:
    """x[b, at[b, p]] as a one-hot matmul: a batched contraction partitions over any batch sharding
    without collectives, and its gradient is another one, where a gather's is a scatter-add that
    XLA's SPMD partitioner all-gathers. Exact (HIGHEST: no bf16 passes on TPU) for finite x."""
    one_hot = jax.nn.one_hot(at, x.shape[1], dtype=x.dtype)
    return jnp.einsum("bpt,bte->bpe", one_hot, x, precision=jax.lax.Precision.HIGHEST)
