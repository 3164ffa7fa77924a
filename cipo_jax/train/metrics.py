"""Per-step metrics: `metrics.jsonl`, TensorBoard, and a progress bar with the headline numbers.

Only process 0 writes (multi-host runs call this on every host).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cipo_jax.stats import mean_se

HEADLINE = ("reward_mean", "corr_success", "replay_ratio", "loss_pg", "step_time")


def is_timing(key: str) -> bool:
    """A metric that depends on the machine, not on the run's seed: wall-clock times, rates, and
    XLA compile counts (process-wide: a resumed or second run in one process compiles less).
    Everything else in metrics.jsonl is reproducible bit for bit."""
    return key.startswith(("time_", "compile")) or key.endswith("_per_s") or key == "step_time"


def clean_value(value: Any) -> Any:
    """A JSON-safe scalar: floats as floats, non-finite ones as None."""
    value = float(value) if hasattr(value, "__float__") and not isinstance(value, (int, bool)) else value
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None marks "not finite"
    return value


class MetricsWriter:
    def __init__(self, run_dir: str | Path, *, total_steps: int, start_step: int, tensorboard: bool,
                 is_main: bool = True, progress: bool = True):
        self.is_main = is_main
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        self._bar = None
        if not is_main:
            return
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(run_dir) / "tb"))
        if progress:
            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                             dynamic_ncols=True)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.is_main:
            return
        row = {"step": step, **{k: clean_value(v) for k, v in metrics.items()}}
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:  # a failed write() names no file: name it (disk full, quota)
            raise OSError(e.errno, e.strerror, str(self.path)) from e
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k: f"{row[k]:.3g}" for k in HEADLINE
                                   if isinstance(row.get(k), (int, float))})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()


def truncate_metrics(path: str | Path, last_step: int) -> None:
    """Drop rows with step > last_step (and a torn last line): a run resumed from the checkpoint
    at last_step rewrites them, and a killed run may have logged steps it never checkpointed."""
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a write cut short by a kill
            continue
        if row.get("step", 0) <= last_step:
            kept.append(line + "\n")
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)  # atomic: a kill now leaves the old file or the new one


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def reward_change(rows: list[dict[str, Any]], fraction: float = 0.1) -> dict[str, float]:
    """Mean `reward_mean` (and its SE over steps) of the first and last `fraction` of the steps.

    Steps are the units: the SE is the spread of per-step means / sqrt(steps), which ignores the
    autocorrelation between neighbouring steps, so read it as a lower bound.
    """
    rewards = [r["reward_mean"] for r in rows if r.get("reward_mean") is not None]
    if not rewards:
        raise ValueError("reward_change: no reward_mean in the metrics")
    if not 0 < fraction <= 0.5:
        raise ValueError(f"reward_change: fraction must lie in (0, 0.5], got {fraction}")
    w = max(1, int(round(len(rewards) * fraction)))

    (first, first_se), (last, last_se) = mean_se(np.array(rewards[:w])), mean_se(np.array(rewards[-w:]))
    return {"steps": len(rewards), "window": w, "first": first, "first_se": first_se, "last": last,
            "last_se": last_se, "change": last - first}
