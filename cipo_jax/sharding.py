"""Device mesh and logical-axis sharding: one table maps logical names to mesh axes.

Parameters carry logical axis names as `logical_axes` metadata (e.g. ("embed", "mlp")); model
code marks activations with `constrain(x, ("act_batch", "act_len", "act_embed"))`. RULES below is
the only place that says which mesh axis each name is split over. A dimension that does not
divide its mesh axes falls back to replication (e.g. SmolLM2's 9 heads on tensor=2), so every
model runs on every mesh, including a single device.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Optional, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from cipo_jax.config import MeshConfig

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axes (None = replicated). Batch over data x fsdp (FSDP shards the batch
# like data parallelism, and the weights' embed dim), model-parallel dims over tensor.
RULES: dict[str, Optional[tuple[str, ...]]] = {
    # parameters
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "mlp": ("tensor",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": None,
    "layers": None,
    "norm": None,
    # activations
    "act_batch": ("data", "fsdp"),
    "act_len": None,
    "act_embed": None,
    "act_heads": ("tensor",),
    "act_kv_heads": ("tensor",),
    "act_mlp": ("tensor",),
    "act_vocab": ("tensor",),
}
BATCH_AXES: tuple[str, ...] = RULES["act_batch"]  # the mesh axes a batch's rows are split over


def batch_shards(mesh: Mesh | Mapping[str, int] | None) -> int:
    """Into how many parts a batch's rows are split on `mesh` (a Mesh or its axis sizes; None: 1)."""
    if mesh is None:
        return 1
    shape = dict(mesh.shape) if isinstance(mesh, Mesh) else mesh
    return math.prod(shape.get(axis, 1) for axis in BATCH_AXES)


def make_mesh(mesh_cfg: MeshConfig, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh; one axis may be -1 = all remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    shape = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
    if shape.count(-1) > 1:
        raise ValueError(f"mesh {tuple(shape)}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh {tuple(shape)}: axis sizes must be positive or -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if n % known:
            raise ValueError(f"mesh {tuple(shape)} does not divide {n} devices")
        shape[shape.index(-1)] = n // known
    if math.prod(shape) != n:
        raise ValueError(f"mesh {tuple(shape)} needs {math.prod(shape)} devices, have {n}")
    grid = np.asarray(devices, dtype=object).reshape(shape)
    # Auto axes: with_sharding_constraint and GSPMD propagation (jax.make_mesh defaults to Explicit).
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_to_mesh(
    logical_axes: Sequence[Optional[str]], shape: Sequence[int], mesh_shape: dict[str, int]
) -> PartitionSpec:
    """PartitionSpec for an array of `shape` whose dims are named `logical_axes`.

    A dim keeps the longest prefix of its mesh axes whose size product divides it (so an
    indivisible dim is replicated), and a mesh axis already used by an earlier dim is skipped.
    """
    if len(logical_axes) != len(shape):
        raise ValueError(f"logical axes {tuple(logical_axes)} do not match shape {tuple(shape)}")
    used: set[str] = set()
    spec = []
    for name, size in zip(logical_axes, shape):
        if name is not None and name not in RULES:
            raise ValueError(f"unknown logical axis {name!r}; known: {', '.join(RULES)}")
        chosen: list[str] = []
        for axis in (RULES[name] or ()) if name else ():
            if axis in used or mesh_shape.get(axis, 1) == 1:
                continue
            if size % (math.prod(mesh_shape[a] for a in chosen) * mesh_shape[axis]):
                break
            chosen.append(axis)
        used.update(chosen)
        spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
    return PartitionSpec(*spec)


def constrain(x: jax.Array, logical_axes: Sequence[Optional[str]]) -> jax.Array:
    """Sharding constraint on an activation under the mesh set with `jax.set_mesh` (identity
    when none is set, e.g. a single-device run)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_mesh(logical_axes, x.shape, dict(mesh.shape)))


def state_shardings(state: nnx.State, mesh: Mesh) -> nnx.State:
    """NamedSharding for every variable of `state` from its `logical_axes` metadata
    (variables without it are replicated)."""

    def one(var):
        axes = var.get_metadata().get("logical_axes")
        shape = var.shape
        spec = PartitionSpec() if axes is None else logical_to_mesh(axes, shape, dict(mesh.shape))
        return NamedSharding(mesh, spec)

    return jax.tree.map(one, state, is_leaf=lambda v: isinstance(v, nnx.Variable))


def shard_model(model: nnx.Module, mesh: Mesh) -> nnx.Module:
    """Place the model's state on `mesh` by the logical rules (in place; returns the model)."""
    state = nnx.state(model)
    shardings = state_shardings(state, mesh)
    placed = jax.tree.map(
        lambda var, sh: var.replace(jax.device_put(var[...], sh)),
        state,
        shardings,
        is_leaf=lambda v: isinstance(v, nnx.Variable),
    )
    nnx.update(model, placed)
    return model


def sharded_forward(model: nnx.Module, mesh: Mesh) -> Callable[[jax.Array], jax.Array]:
    """A jitted `tokens [B, T] -> logits [B, T, V]` with the batch over BATCH_AXES and the
    parameters where `shard_model` placed them (read at each call, so updates are seen)."""

    @jax.jit
    def forward(graphdef, state, tokens):
        return nnx.merge(graphdef, state)(constrain(tokens, ("act_batch", "act_len")))

    def call(tokens):
        spec = logical_to_mesh(("act_batch", "act_len"), tokens.shape, dict(mesh.shape))
        with jax.set_mesh(mesh):
            return forward(*nnx.split(model), jax.device_put(tokens, NamedSharding(mesh, spec)))

    return call
