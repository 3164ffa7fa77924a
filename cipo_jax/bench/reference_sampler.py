"""A minimal JAX KV-cache greedy sampler: the in-repo baseline of `bench sample`.

Written the plain way (one array per weight, layers as a Python loop, one cache array per
layer, the prompt forward and a `fori_loop` of decode steps in one jitted function), with none
of the sampler's features: no ragged prompts, no stop tokens, no sampling knobs, no buckets.
It shares our backend (XLA), so its speed is what any careful JAX loop gets on this machine;
a peer JAX sampler (e.g. Tunix's) is at most this fast. Llama-family models without q/k/v
bias or q/k norm (SmolLM2).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def reference_weights(model) -> dict:
    """Our decoder's weights as plain per-layer arrays (a copy: nothing is shared with `model`)."""
    c = model.config
    if c.qkv_bias or c.qk_norm or c.rope_type != "default" or not c.tie_embeddings:
        raise ValueError("the reference sampler covers tied-embedding Llama models with default RoPE only")
    stacked = {name: np.asarray(w) for name, w in model.layers.arrays().items()}
    layers = [{name: jnp.asarray(w[i]) for name, w in stacked.items()} for i in range(c.num_layers)]
    inv_freq = 1.0 / (c.rope_theta ** (np.arange(0, c.head_dim, 2) / c.head_dim))
    return {"embed": jnp.asarray(np.asarray(model.embed[...])), "norm": jnp.asarray(np.asarray(model.final_norm[...])),
            "layers": layers, "inv_freq": jnp.asarray(inv_freq, jnp.float32)}


def _rms(x, scale, eps):
    return scale * x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)


def _rope(x, positions, inv_freq):  # x [B, T, N, D], positions [T]
    angles = positions[:, None].astype(jnp.float32) * inv_freq  # (T, D/2)
    sin, cos = jnp.sin(angles)[None, :, None], jnp.cos(angles)[None, :, None]
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _forward(w, eps, tokens, start, ks, vs):
    """Tokens [B, T] at positions start..start+T-1 through the cache; last position's logits."""
    b, t = tokens.shape
    positions = start + jnp.arange(t)
    visible = jnp.arange(ks[0].shape[1])[None, :] <= positions[:, None]  # (T, S)
    x = w["embed"][tokens]
    new_ks, new_vs = [], []
    for p, k_cache, v_cache in zip(w["layers"], ks, vs):
        h = _rms(x, p["attn_norm"], eps)
        q = _rope(jnp.einsum("bte,ehd->bthd", h, p["q"]), positions, w["inv_freq"])
        k = _rope(jnp.einsum("bte,ekd->btkd", h, p["k"]), positions, w["inv_freq"])
        v = jnp.einsum("bte,ekd->btkd", h, p["v"])
        k_cache = jax.lax.dynamic_update_slice(k_cache, k, (0, start, 0, 0))
        v_cache = jax.lax.dynamic_update_slice(v_cache, v, (0, start, 0, 0))
        new_ks.append(k_cache)
        new_vs.append(v_cache)
        kv_heads, d = k_cache.shape[2], k_cache.shape[3]
        q = q.reshape(b, t, kv_heads, -1, d)  # (B, T, K, G, D)
        scores = jnp.einsum("btkgd,bskd->bkgts", q, k_cache) / math.sqrt(d)
        probs = jax.nn.softmax(jnp.where(visible, scores, -1e30), axis=-1)
        out = jnp.einsum("bkgts,bskd->btkgd", probs, v_cache).reshape(b, t, -1, d)
        x = x + jnp.einsum("bthd,hde->bte", out, p["o"])
        h = _rms(x, p["mlp_norm"], eps)
        x = x + (jax.nn.silu(h @ p["gate"]) * (h @ p["up"])) @ p["down"]
    return _rms(x[:, -1], w["norm"], eps) @ w["embed"].T, new_ks, new_vs


@functools.partial(jax.jit, static_argnames=("new_tokens", "eps"))
def reference_greedy(w, prompts, *, new_tokens: int, eps: float):
    """Greedy continuation of equal-length prompts [B, P]: exactly `new_tokens` ids per row."""
    b, prompt_len = prompts.shape
    layer = w["layers"][0]
    shape = (b, prompt_len + new_tokens, layer["k"].shape[1], layer["k"].shape[2])
    ks = [jnp.zeros(shape, jnp.float32) for _ in w["layers"]]
    vs = [jnp.zeros(shape, jnp.float32) for _ in w["layers"]]
    logits, ks, vs = _forward(w, eps, prompts, 0, ks, vs)
    first = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    out = jnp.zeros((b, new_tokens), jnp.int32).at[:, 0].set(first)

    def step(i, carry):
        token, ks, vs, out = carry
        logits, ks, vs = _forward(w, eps, token[:, None], prompt_len + i - 1, ks, vs)
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return token, ks, vs, out.at[:, i].set(token)

    return jax.lax.fori_loop(1, new_tokens, step, (first, ks, vs, out))[3]
