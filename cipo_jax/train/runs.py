"""Run directories seen from outside the training loop: start a run, list its checkpoints, hand
one run's warm start to another. Experiment drivers (`evaluation/compare.py`) go through here;
the loop itself is `trainer.Trainer`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from cipo_jax.config import Config
from cipo_jax.train.checkpoint import Checkpointer

# Besides the step-0 checkpoint, what a run's warm start leaves in its directory.
_WARM_START_FILES = ("tokenizer.model", "sft_metrics.jsonl")


def launch(cfg: Config, *, progress_bar: bool = True) -> dict[str, Any]:
    """Train `cfg` to run.steps, resuming from its run_dir's checkpoints; the run's summary."""
    from cipo_jax.train.trainer import train

    return train(cfg, progress_bar=progress_bar)


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """The steps of a run's complete checkpoints, ascending ([] when it has none)."""
    directory = Path(run_dir) / "checkpoints"
    if not directory.is_dir():
        return []
    ckpt = Checkpointer(directory, async_save=False, read_only=True)
    try:
        return ckpt.steps()
    finally:
        ckpt.close()


def share_warm_start(src: str | Path, dst: str | Path) -> None:
    """Seed run `dst` with run `src`'s step-0 checkpoint (the policy after SFT) and tokenizer,
    unless `dst` has checkpoints already; `dst` then resumes from it instead of repeating SFT."""
    src, dst = Path(src), Path(dst)
    if checkpoint_steps(dst):
        return
    if 0 not in checkpoint_steps(src):
        raise FileNotFoundError(f"{src}: no step-0 checkpoint to share")
    (dst / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "checkpoints" / "0", dst / "checkpoints" / "0")
    for name in _WARM_START_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
