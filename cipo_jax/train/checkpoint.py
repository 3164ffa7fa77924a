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
import numpy as np
import orbax.checkpoint as ocp
from jaxtyping import UInt64

log = logging.getLogger(__name__)

FINGERPRINT_KEY = "array_fingerprints"


class CheckpointError(RuntimeError):
    """Checkpoints exist but none can be restored, or a save failed."""


def _word_bits(block: np.ndarray) -> UInt64[np.ndarray, " n"]:
    """One word of bit patterns per element (no value conversion, so NaN bits count)."""
    flat = np.ascontiguousarray(block).reshape(-1)
    size = flat.dtype.itemsize
    if size == 8:  # fold the two halves of a 64-bit element into one 32-bit word
        v = flat.view(np.uint64)
        return (v & 0xFFFFFFFF) ^ (v >> np.uint64(32))
    return flat.view({4: np.uint32, 2: np.uint16, 1: np.uint8}[size]).astype(np.uint64)


def _block_fingerprint(block: np.ndarray, index: tuple[slice, ...], shape: tuple[int, ...]) -> int:
    """sum(bits[i] * (i + 1)) mod 2^32 over this block's elements, i their flat index in the
    whole array. Partial sums of disjoint blocks add up to the whole array's."""
    bits = _word_bits(block)
    if shape:
        axes = [np.arange(*sl.indices(dim)) for sl, dim in zip(index, shape)]
        position = np.ravel_multi_index(np.ix_(*axes), shape).reshape(-1).astype(np.uint64)
    else:
        position = np.zeros(1, np.uint64)
    # Products stay below 2^64; a wrapping uint64 sum is still exact mod 2^32.
    return int((bits * (position + np.uint64(1))).sum(dtype=np.uint64) % 2**32)


def _leaf_fingerprint(x: Any) -> int:
    """Position-weighted sum of the bit patterns mod 2^32: exact, independent of the order of
    summation (and so of sharding), and it changes when any element or its place changes.

    Computed on the host from this process's shards (one replica each), so no XLA computation
    runs while an async save may still be writing; multi-process runs add the processes' parts.
    """
    if isinstance(x, jax.Array):
        total = sum(_block_fingerprint(np.asarray(s.data), s.index, x.shape)
                    for s in x.addressable_shards if s.replica_id == 0)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            total = int(np.sum(multihost_utils.process_allgather(np.uint64(total), tiled=False)))
        return total % 2**32
    block = np.asarray(x)
    return _block_fingerprint(block, tuple(slice(None) for _ in block.shape), block.shape)


def fingerprint(tree: Any) -> dict[str, int]:
    """{leaf path: uint32 fingerprint} of every array leaf of `tree`."""
    return {jax.tree_util.keystr(path): _leaf_fingerprint(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _first_line(e: BaseException) -> str:
    """One line for logs and errors; a long one keeps its end, where tensorstore puts the cause."""
    line = (str(e).strip().splitlines() or [""])[0]
    if len(line) > 400:
        line = f"{line[:150]} ... {line[-250:]}"
    return f"{type(e).__name__}: {line}"


class Checkpointer:
    """The one reader and writer of a run's checkpoint directory. `read_only` opens it for
    listing and restoring without touching it (a run that is saving there meanwhile keeps its
    unfinished step)."""

    def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True, read_only: bool = False):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                               cleanup_tmp_directories=not read_only,
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

    def restore_latest(self, abstract_arrays: Any, *, step: int | None = None) -> tuple[int, Any, dict[str, Any]] | None:
        """Newest intact checkpoint (at or before `step`, if given) as (step, arrays, meta); None
        when there are no checkpoints; CheckpointError when there are some but none is intact.

        `abstract_arrays` gives the tree structure, shapes, dtypes and shardings to restore into.
        """
        steps = [s for s in self.steps() if step is None or s <= step]
        problems = []
        for step in reversed(steps):
            try:
                return (step, *self.read(step, abstract_arrays))
            except Exception as e:  # a torn or corrupt step: fall back to the previous one
                reason = _first_line(e)
                problems.append(f"{self.directory / str(step)} ({reason})")
                log.warning("checkpoint %s is unreadable (%s); falling back to an earlier one",
                            self.directory / str(step), reason)
        if steps:
            raise CheckpointError("no checkpoint could be restored: " + "; ".join(problems))
        return None

    def read(self, step: int, abstract_arrays: Any = None, *, verify: bool = True) -> tuple[Any, dict[str, Any]]:
        """One step's (arrays, meta). `abstract_arrays` gives the structure, shapes, dtypes and
        shardings to restore into (None: as saved). `verify` compares every array with its saved
        fingerprint (CheckpointError on a mismatch); turn it off only to inspect a damaged step,
        or when restoring without a target: arrays restored as saved into another device count
        come back in a layout whose fingerprints do not match (seen with 8 CPU devices)."""
        restored = self._mngr.restore(step, args=ocp.args.Composite(
            arrays=ocp.args.StandardRestore(abstract_arrays), meta=ocp.args.JsonRestore()))
        meta = dict(restored["meta"])
        expected = meta.pop(FINGERPRINT_KEY, None)
        if not verify:
            return restored["arrays"], meta
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
