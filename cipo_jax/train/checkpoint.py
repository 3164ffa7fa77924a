"""Orbax checkpoints of the whole training state: arrays (params, optimizer state) plus a JSON
record of everything else that makes a resumed run identical (step, data cursor, replay state,
bad-step counter, resolved config).

Saves are asynchronous and keep the newest N. Restore walks back from the newest step when a
checkpoint is truncated or corrupt, warning with the name of the one it skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def save(self, step: int, arrays: Any, meta: dict[str, Any], *, force: bool = False) -> None:
        args = ocp.args.Composite(arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta))
        self._mngr.save(step, args=args, force=force)

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def restore_latest(self, abstract_arrays: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """Newest restorable checkpoint as (step, arrays, meta), or None when there is none.

        `abstract_arrays` gives the tree structure, shapes, dtypes and shardings to restore into.
        """
        steps = self.steps()
        for step in reversed(steps):
            try:
                restored = self._mngr.restore(step, args=ocp.args.Composite(
                    arrays=ocp.args.StandardRestore(abstract_arrays), meta=ocp.args.JsonRestore()))
                return step, restored["arrays"], dict(restored["meta"])
            except Exception as e:  # a torn or corrupt step: fall back to the previous one
                log.warning("checkpoint %s is unreadable (%s: %s); falling back to an earlier one",
                            self.directory / str(step), type(e).__name__, str(e).splitlines()[0][:200])
        return None

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) describing `tree`, for restoring into the same layout."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
