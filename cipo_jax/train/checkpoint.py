"""Orbax checkpoints of the whole training state: arrays (params, optimizer state) plus a JSON
record of everything else that makes a resumed run identical (step, data cursor, replay state,
bad-step counter, resolved config).

Saves are asynchronous and keep the newest N; orbax writes each step into a temporary directory
and renames it when complete, so a kill mid-save leaves no half step behind. A step that is
there but damaged (truncated or overwritten files) may still restore without an error, so every
save also records a fingerprint of each array in the JSON record and restore compares it. An
unreadable or mismatching step is skipped with a warning naming it, falling back to the one
before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jaxtyping import Array, UInt32

log = logging.getLogger(__name__)

FINGERPRINT_KEY = "array_fingerprints"


class CheckpointError(RuntimeError):
    """Checkpoints exist but none can be restored, or a save failed."""


def _as_uint32(x: Array) -> UInt32[Array, " n"]:
    """The leaf's bit patterns as a flat uint32 vector (no value conversion, so NaN bits count)."""
    x = jnp.asarray(x).reshape(-1)
    size = x.dtype.itemsize
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    if size == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    if size == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    unsigned = {2: jnp.uint16, 1: jnp.uint8}[size]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _leaf_fingerprint(x: Array) -> UInt32[Array, ""]:
    """Position-weighted sum of the bit patterns mod 2^32: exact, independent of the reduction
    order (and so of sharding), and it changes when any element or any element's place changes."""
    bits = _as_uint32(x)
    weights = jnp.arange(1, bits.shape[0] + 1, dtype=jnp.uint32)
    return jnp.sum(bits * weights, dtype=jnp.uint32)


# One jit per leaf, not per tree: leaves may sit on different devices (a restored scalar on one
# device, sharded parameters on all), which one jitted computation refuses.
_leaf_fingerprint_jit = jax.jit(_leaf_fingerprint)


def fingerprint(tree: Any) -> dict[str, int]:
    """{leaf path: uint32 fingerprint} of every array leaf of `tree`."""
    prints = [(jax.tree_util.keystr(path), _leaf_fingerprint_jit(leaf))
              for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]
    return {key: int(v) for key, v in prints}


def _first_line(e: BaseException) -> str:
    """One line for logs and errors; a long one keeps its end, where tensorstore puts the cause."""
    line = (str(e).strip().splitlines() or [""])[0]
    if len(line) > 400:
        line = f"{line[:150]} ... {line[-250:]}"
    return f"{type(e).__name__}: {line}"


class Checkpointer:
    def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True,
                                               enable_async_checkpointing=async_save)
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def save(self, step: int, arrays: Any, meta: dict[str, Any], *, force: bool = False) -> None:
        meta = {**meta, FINGERPRINT_KEY: fingerprint(arrays)}
        args = ocp.args.Composite(arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta))
        try:
            self._mngr.save(step, args=args, force=force)
        except Exception as e:  # also an earlier async save that failed surfaces here
            raise CheckpointError(f"saving checkpoint {self.directory / str(step)} failed: {_first_line(e)}") from e

    def wait(self) -> None:
        try:
            self._mngr.wait_until_finished()
        except Exception as e:  # an async write that failed (disk full, directory gone)
            raise CheckpointError(f"writing a checkpoint under {self.directory} failed: {_first_line(e)}") from e

    def restore_latest(self, abstract_arrays: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """Newest intact checkpoint as (step, arrays, meta); None when there are no checkpoints;
        CheckpointError when there are some but none is intact.

        `abstract_arrays` gives the tree structure, shapes, dtypes and shardings to restore into.
        """
        steps = self.steps()
        problems = []
        for step in reversed(steps):
            try:
                return (step, *self._restore_verified(step, abstract_arrays))
            except Exception as e:  # a torn or corrupt step: fall back to the previous one
                reason = _first_line(e)
                problems.append(f"{self.directory / str(step)} ({reason})")
                log.warning("checkpoint %s is unreadable (%s); falling back to an earlier one",
                            self.directory / str(step), reason)
        if steps:
            raise CheckpointError("no checkpoint could be restored: " + "; ".join(problems))
        return None

    def _restore_verified(self, step: int, abstract_arrays: Any) -> tuple[Any, dict[str, Any]]:
        restored = self._mngr.restore(step, args=ocp.args.Composite(
            arrays=ocp.args.StandardRestore(abstract_arrays), meta=ocp.args.JsonRestore()))
        meta = dict(restored["meta"])
        expected = meta.pop(FINGERPRINT_KEY, None)
        if expected is None:
            raise CheckpointError("its record has no array fingerprints")
        got = fingerprint(restored["arrays"])
        bad = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
        if bad:
            raise CheckpointError(f"{len(bad)} array(s) differ from their saved fingerprint, e.g. {bad[0]}")
        return restored["arrays"], meta

    def close(self) -> None:
        self.wait()
        self._mngr.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) describing `tree`, for restoring into the same layout."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
