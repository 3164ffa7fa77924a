"""The decoder: token embedding, L pre-norm layers scanned over stacked weights, final norm, LM head.

Layer weights are stacked on a leading "layers" axis and the training forward runs the layer
function by `lax.scan`, so compile time does not grow with depth and `remat` wraps exactly one
layer. The cached forward (sampling) runs the layers as an unrolled loop instead: each layer's
keys/values are their own buffer, updated in place, and the sampler may pass each layer's
weights as separate arrays (`layer_weights`), which XLA's CPU matmuls read ~1.5x faster than
slices of the stack (docs/performance.md). Every parameter is float32 and carries
`logical_axes` metadata for `cipo_jax.sharding`.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from cipo_jax.models.config import DecoderConfig
from cipo_jax.models.layers import (
    apply_rope,
    attention,
    matmul,
    rms_norm,
    rope_inv_freq,
    select_positions,
    swiglu,
)
from cipo_jax.sharding import constrain

_INIT_STD = 0.02  # transformers' initializer_range

_REMAT_POLICY = {
    "full": None,  # save only the layer input; recompute everything else
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep weight matmuls
}


@flax.struct.dataclass
class KVCache:
    """Keys and values, one [B, K, S, D] buffer per layer in the compute dtype. Separate buffers
    (not one [L, ...] array carried through a scan) let a decode step write one slot of each in
    place instead of copying the whole cache every layer; with (B, K) leading, the attention
    matmuls read the cache as it lies (a [B, S, K, D] cache is transposed every step)."""

    k: tuple[Float[Array, "B K S D"], ...]
    v: tuple[Float[Array, "B K S D"], ...]


MATMUL_WEIGHTS = ("q", "k", "v", "o", "gate", "up", "down")


def _in_compute_dtype(weight: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """`weight` cast to the compute dtype, unless it was handed over narrower (bf16 rollout copies)."""
    return weight if weight.dtype.itemsize < dtype.itemsize else weight.astype(dtype)


def _param(value: jax.Array, *axes: Optional[str]) -> nnx.Param:
    return nnx.Param(value, logical_axes=axes)


class Blocks(nnx.Module):
    """The weights of all L layers, stacked on axis 0."""

    def __init__(self, c: DecoderConfig, rngs: nnx.Rngs):
        n, e, h, k, d, f = c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size

        def weight(shape, axes):
            return _param(_INIT_STD * jax.random.normal(rngs.params(), (n, *shape), jnp.float32), "layers", *axes)

        def const(value, shape, axes):
            return _param(jnp.full((n, *shape), value, jnp.float32), "layers", *axes)

        self.attn_norm = const(1.0, (e,), ("norm",))
        self.q = weight((e, h, d), ("embed", "heads", "head_dim"))
        self.k = weight((e, k, d), ("embed", "kv_heads", "head_dim"))
        self.v = weight((e, k, d), ("embed", "kv_heads", "head_dim"))
        self.o = weight((h, d, e), ("heads", "head_dim", "embed"))
        if c.qkv_bias:
            self.q_bias = const(0.0, (h, d), ("heads", "head_dim"))
            self.k_bias = const(0.0, (k, d), ("kv_heads", "head_dim"))
            self.v_bias = const(0.0, (k, d), ("kv_heads", "head_dim"))
        if c.qk_norm:
            self.q_norm = const(1.0, (d,), ("norm",))
            self.k_norm = const(1.0, (d,), ("norm",))
        self.mlp_norm = const(1.0, (e,), ("norm",))
        self.gate = weight((e, f), ("embed", "mlp"))
        self.up = weight((e, f), ("embed", "mlp"))
        self.down = weight((f, e), ("mlp", "embed"))

    def arrays(self) -> dict[str, jax.Array]:
        return {name: var[...] for name, var in vars(self).items() if isinstance(var, nnx.Param)}


def unstack_layers(stacked: dict[str, jax.Array], num_layers: int) -> list[dict[str, jax.Array]]:
    """Layer i's weights from the stacked [L, ...] arrays (static slices)."""
    return [{name: w[i] for name, w in stacked.items()} for i in range(num_layers)]


def _layer(
    c: DecoderConfig,
    inv_freq: Float[Array, "D2"],
    p: dict[str, jax.Array],
    x: Float[Array, "B T E"],
    positions: Int[Array, "B T"],
    mask: Bool[Array, "B T S"],
    kv: Optional[tuple[jax.Array, jax.Array]],
    cache_index: Int[Array, ""],
):
    """One pre-norm layer. With `kv` (this layer's cache [B, K, S, D] pair) the new keys and
    values are written at `cache_index` and attention reads the whole cache."""
    dtype = jnp.dtype(c.dtype)
    b, t, e = x.shape

    def w(name):
        return _in_compute_dtype(p[name], dtype)

    def project(h, name):  # [B, T, E] @ [E, N, D] as one plain matmul (a reshape, no transpose)
        weight = w(name)
        return matmul(h, weight.reshape(e, -1)).reshape(b, t, *weight.shape[1:])

    h = rms_norm(x, p["attn_norm"], c.rms_norm_eps)
    q, k, v = project(h, "q"), project(h, "k"), project(h, "v")
    if c.qkv_bias:
        q, k, v = q + w("q_bias"), k + w("k_bias"), v + w("v_bias")
    if c.qk_norm:
        q, k = rms_norm(q, p["q_norm"], c.rms_norm_eps), rms_norm(k, p["k_norm"], c.rms_norm_eps)
    q = constrain(apply_rope(q, positions, inv_freq), ("act_batch", "act_len", "act_heads", None))
    k = constrain(apply_rope(k, positions, inv_freq), ("act_batch", "act_len", "act_kv_heads", None))
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, T, D], the cache layout
    if kv is None:
        keys, values, new_kv = k, v, None
    else:
        start = (0, 0, cache_index, 0)
        keys = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype), start)
        values = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype), start)
        new_kv = (keys, values)
    out = attention(q, keys.astype(dtype), values.astype(dtype), mask)
    x = x + matmul(out.reshape(b, t, -1), w("o").reshape(-1, e))
    h = rms_norm(x, p["mlp_norm"], c.rms_norm_eps)
    x = x + swiglu(h, w("gate"), w("up"), w("down"))
    return constrain(x, ("act_batch", "act_len", "act_embed")), new_kv


class Decoder(nnx.Module):
    """Llama / Qwen2 / Qwen3 / SmolLM2 causal decoder.

    `model(tokens)` -> float32 logits [B, T, V] (positions 0..T-1, causal).
    `model(tokens, positions=, cache=, cache_index=, kv_mask=)` -> (logits, new_cache): the T
    tokens' keys/values go to slots [cache_index, cache_index + T) of every row and query t of
    row b sees slot s iff kv_mask[b, s] and s <= cache_index + t. Without a cache, kv_mask
    [B, T] (optional) hides padding keys in the plain causal forward.
    `logits_at` [B, P] (optional): logits only at these positions of each row, [B, P, V]; the
    output layer is the largest matmul, so a prefill that needs one position computes one.
    `layer_weights` (cached forward only): per-layer weights, e.g. `model.layer_weights()`
    materialised outside the jitted decode loop; by default they are sliced from the stack.
    `head_weight` (optional): the output layer's weight, e.g. `model.head_weight(jnp.bfloat16)`.
    Weights handed over in a dtype narrower than the compute dtype (bf16 weights for float32
    rollouts) are multiplied in that dtype with float32 accumulation (`layers.matmul`).
    """

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        v, e = config.vocab_size, config.hidden_size
        self.embed = _param(_INIT_STD * jax.random.normal(rngs.params(), (v, e), jnp.float32), "vocab", "embed")
        self.layers = Blocks(config, rngs)
        self.final_norm = _param(jnp.ones((e,), jnp.float32), "norm")
        if not config.tie_embeddings:
            self.lm_head = _param(_INIT_STD * jax.random.normal(rngs.params(), (e, v), jnp.float32), "embed", "vocab")
        # Where the weights came from ("hf", dir) / ("gguf", file): save_hf copies the tokenizer.
        self.source: Optional[tuple[str, str]] = None

    def __call__(
        self,
        tokens: Int[Array, "B T"],
        *,
        positions: Optional[Int[Array, "B T"]] = None,
        cache: Optional[KVCache] = None,
        cache_index: Any = None,
        kv_mask: Optional[Bool[Array, "B S"]] = None,
        logits_at: Optional[Int[Array, "B P"]] = None,
        layer_weights: Optional[list[dict[str, jax.Array]]] = None,
        head_weight: Optional[jax.Array] = None,
    ):
        c = self.config
        dtype = jnp.dtype(c.dtype)
        b, t = tokens.shape
        cache_index = jnp.asarray(0 if cache_index is None else cache_index, jnp.int32)
        offsets = jnp.arange(t, dtype=jnp.int32)
        if positions is None:
            positions = jnp.broadcast_to(cache_index + offsets, (b, t))
        if cache is None:
            mask = jnp.broadcast_to(offsets[None, :, None] >= offsets[None, None, :], (b, t, t))
            slots = None
        else:
            s = cache.k[0].shape[2]
            mask = jnp.broadcast_to(jnp.arange(s)[None, None, :] <= cache_index + offsets[None, :, None], (b, t, s))
        if kv_mask is not None:
            mask = mask & kv_mask[:, None, :]

        x = constrain(jnp.take(self.embed[...], tokens, axis=0).astype(dtype), ("act_batch", "act_len", "act_embed"))
        inv_freq = jnp.asarray(rope_inv_freq(c))

        if cache is None:
            def body(x, params):
                return _layer(c, inv_freq, params, x, positions, mask, None, cache_index)[0], None

            if c.remat != "none":
                body = jax.checkpoint(body, policy=_REMAT_POLICY[c.remat], prevent_cse=False)
            x, _ = jax.lax.scan(body, x, self.layers.arrays())
        else:
            if layer_weights is None:
                layer_weights = self.layer_weights()
            new_k, new_v = [], []
            for params, k, v in zip(layer_weights, cache.k, cache.v, strict=True):
                x, (k, v) = _layer(c, inv_freq, params, x, positions, mask, (k, v), cache_index)
                new_k.append(k)
                new_v.append(v)

        if logits_at is not None:
            x = select_positions(x, logits_at)  # [B, P, E]
        h = rms_norm(x, self.final_norm[...], c.rms_norm_eps)
        head = _in_compute_dtype(self.head_weight() if head_weight is None else head_weight, dtype)
        spec = "bte,ve->btv" if c.tie_embeddings else "bte,ev->btv"
        logits = jnp.einsum(spec, h.astype(head.dtype), head, preferred_element_type=jnp.float32)
        logits = constrain(logits, ("act_batch", "act_len", "act_vocab"))
        if cache is None:
            return logits
        return logits, KVCache(k=tuple(new_k), v=tuple(new_v))

    def layer_weights(self, matmul_dtype: Any = None) -> list[dict[str, jax.Array]]:
        """Each layer's weights as separate arrays (copies when called outside jit); with
        `matmul_dtype` (e.g. bfloat16) the matmul weights are cast to it, norms and biases kept."""
        layers = unstack_layers(self.layers.arrays(), self.config.num_layers)
        if matmul_dtype is None:
            return layers
        # Cast after slicing: XLA fuses each slice with its convert (5x faster than casting the stack).
        return [{k: w.astype(matmul_dtype) if k in MATMUL_WEIGHTS else w for k, w in p.items()} for p in layers]

    def head_weight(self, dtype: Any = None) -> jax.Array:
        """The output layer's weight (the embedding when tied: [V, E], else [E, V]), in `dtype` if given."""
        head = self.embed[...] if self.config.tie_embeddings else self.lm_head[...]
        return head if dtype is None else head.astype(dtype)

    def init_cache(self, batch: int, max_len: int, dtype: Any = None) -> KVCache:
        c = self.config
        shape = (batch, c.num_kv_heads, max_len, c.head_dim)
        zeros = [jnp.zeros(shape, jnp.dtype(dtype or c.dtype)) for _ in range(c.num_layers)]
        return KVCache(k=tuple(zeros), v=tuple(zeros))


def init_model(config: DecoderConfig, seed: int = 0) -> Decoder:
    """A randomly initialised decoder (normal(0.02) weights, unit norms, zero biases)."""
    return Decoder(config, rngs=nnx.Rngs(seed))
