"""`python -m cipo_jax train --config configs/tiny.yaml key.sub=value ...`"""

from __future__ import annotations

import argparse
import logging
import sys

from cipo_jax.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML run config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. cipo.C=0 run.steps=50")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    from cipo_jax import distributed

    distributed.initialize(cfg.run)  # before any JAX computation
    from cipo_jax.train.checkpoint import CheckpointError
    from cipo_jax.train.trainer import TrainingError, train

    try:
        summary = train(cfg, progress_bar=not args.no_progress)
    except (TrainingError, CheckpointError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if summary["stopped_by_signal"] is not None:
        # Exit 0: the state is checkpointed; the same command resumes it.
        print(f"stopped by signal {summary['stopped_by_signal']} at step {summary['step']}; "
              f"rerun the same command to resume from {summary['run_dir']}")
        return 0
    print(f"trained to step {summary['step']}; run dir: {summary['run_dir']}")
    print(run_summary(summary["run_dir"]))
    return 0


def run_summary(run_dir: str) -> str:
    """One line: reward over the first and last tenth of the steps (± SE over steps), and where
    the metrics, plots and checkpoints are."""
    from pathlib import Path

    from cipo_jax.train.metrics import read_metrics, reward_change

    run = Path(run_dir)
    rows = [r for r in read_metrics(run) if r.get("reward_mean") is not None]
    plots = f", plots: tensorboard --logdir {run / 'tb'}" if (run / "tb").is_dir() else ""
    where = f"metrics {run / 'metrics.jsonl'}{plots}, checkpoints {run / 'checkpoints'}"
    if not rows:
        return f"no RL steps logged; {where}"
    c = reward_change(rows)
    return (f"reward_mean {c['first']:.3f} ± {c['first_se']:.3f} over the first {c['window']} steps -> "
            f"{c['last']:.3f} ± {c['last_se']:.3f} over the last {c['window']} ({c['change']:+.3f}); {where}")
