"""The one mapping between transformers' tensor names/layouts and the decoder's parameters.

transformers stores a linear layer as weight [out, in] per layer; the decoder keeps [in, out]
with heads split out ([E, H, D] for q) and all layers stacked on axis 0. Every importer
(safetensors, GGUF) first produces HF-named tensors and builds the model here.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from cipo_jax.models.config import DecoderConfig, WeightError
from cipo_jax.models.decoder import Decoder
from cipo_jax.sharding import logical_to_mesh

# Per layer: HF name suffix, decoder name, layout. A layout int n is a linear weight whose
# first n decoder dims are its input dims (HF keeps it transposed and flattened to [out, in]);
# "flat" is a bias HF keeps flat; "same" is an identical layout.
_LAYER = (
    ("input_layernorm.weight", "attn_norm", "same"),
    ("self_attn.q_proj.weight", "q", 1),
    ("self_attn.k_proj.weight", "k", 1),
    ("self_attn.v_proj.weight", "v", 1),
    ("self_attn.o_proj.weight", "o", 2),
    ("self_attn.q_proj.bias", "q_bias", "flat"),
    ("self_attn.k_proj.bias", "k_bias", "flat"),
    ("self_attn.v_proj.bias", "v_bias", "flat"),
    ("self_attn.q_norm.weight", "q_norm", "same"),
    ("self_attn.k_norm.weight", "k_norm", "same"),
    ("post_attention_layernorm.weight", "mlp_norm", "same"),
    ("mlp.gate_proj.weight", "gate", 1),
    ("mlp.up_proj.weight", "up", 1),
    ("mlp.down_proj.weight", "down", 1),
)
_GLOBAL = (
    ("model.embed_tokens.weight", ("embed",), "same"),
    ("model.norm.weight", ("final_norm",), "same"),
    ("lm_head.weight", ("lm_head",), 1),
)
# Non-parameter buffers some older checkpoints carry.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _abstract(config: DecoderConfig) -> Decoder:
    return nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))


Layout = Union[int, str]


def _hf_shape(shape: tuple[int, ...], layout: Layout) -> tuple[int, ...]:
    if layout == "same":
        return shape
    if layout == "flat":
        return (math.prod(shape),)
    return (math.prod(shape[layout:]), math.prod(shape[:layout]))


def _to_ours(w: np.ndarray, shape: tuple[int, ...], layout: Layout) -> np.ndarray:
    return w.reshape(shape) if isinstance(layout, str) else w.T.reshape(shape)


def _to_hf(a: np.ndarray, layout: Layout) -> np.ndarray:
    if layout == "same":
        return a
    if layout == "flat":
        return a.reshape(-1)
    return a.reshape(math.prod(a.shape[:layout]), -1).T


def _layout(config: DecoderConfig) -> dict[str, tuple[tuple[str, ...], Optional[int], Layout, tuple[int, ...]]]:
    """HF name -> (decoder path, layer index or None, layout, decoder shape of one layer)."""
    _, state = nnx.split(_abstract(config))
    shapes = {path: var.shape for path, var in nnx.to_flat_state(state)}
    out = {}
    for name, path, layout in _GLOBAL:
        if path in shapes:
            out[name] = (path, None, layout, shapes[path])
    for suffix, ours, layout in _LAYER:
        path = ("layers", ours)
        if path in shapes:
            for i in range(config.num_layers):
                out[f"model.layers.{i}.{suffix}"] = (path, i, layout, shapes[path][1:])
    return out


def model_from_hf_tensors(
    config: DecoderConfig, tensors: dict[str, np.ndarray], mesh: Optional[Mesh] = None, source: str = "weights"
) -> Decoder:
    """Build a Decoder from HF-named tensors (any float dtype; stored as float32), checking that
    none is missing, unexpected or of the wrong shape. With `mesh`, parameters are placed
    sharded by the logical rules."""
    expected = _layout(config)
    if config.tie_embeddings:
        tensors = {k: v for k, v in tensors.items() if k != "lm_head.weight"}  # a tied copy, if saved
    tensors = {k: v for k, v in tensors.items() if not k.endswith(_IGNORED_SUFFIXES)}
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise WeightError(f"{source}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} unexpected) for {config.model_type}")
    missing = sorted(set(expected) - set(tensors), key=lambda n: (len(n), n))
    if missing:
        raise WeightError(f"{source}: missing tensor {missing[0]!r} ({len(missing)} missing)")
    stacked: dict[tuple[str, ...], list] = {}
    for name, (path, layer, layout, shape) in expected.items():
        w = tensors[name]
        if tuple(w.shape) != _hf_shape(shape, layout):
            raise WeightError(f"{source}: tensor {name!r} has shape {tuple(w.shape)}, expected {_hf_shape(shape, layout)}")
        w = _to_ours(np.asarray(w, np.float32), shape, layout)
        if layer is None:
            stacked[path] = w
        else:
            stacked.setdefault(path, [None] * config.num_layers)[layer] = w

    graphdef, state = nnx.split(_abstract(config))
    mesh_shape = dict(mesh.shape) if mesh is not None else None

    def fill(path, var):
        value = stacked[path]
        value = np.stack(value) if isinstance(value, list) else value
        if mesh is not None:
            spec = logical_to_mesh(var.get_metadata()["logical_axes"], value.shape, mesh_shape)
            return var.replace(jax.device_put(value, NamedSharding(mesh, spec)))
        return var.replace(jax.numpy.asarray(value))

    flat = [(path, fill(path, var)) for path, var in nnx.to_flat_state(state)]
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def hf_tensors(model: Decoder) -> dict[str, np.ndarray]:
    """The model's parameters as HF-named float32 tensors in transformers' layouts."""
    _, state = nnx.split(model, nnx.Param)
    arrays = {path: np.asarray(var[...], np.float32) for path, var in nnx.to_flat_state(state)}
    out = {}
    for name, (path, layer, layout, _) in _layout(model.config).items():
        value = arrays[path] if layer is None else arrays[path][layer]
        out[name] = _to_hf(value, layout)
    return out
