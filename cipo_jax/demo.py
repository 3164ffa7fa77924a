"""`make demo` = `python -m cipo_jax demo`: a complete small CIPO experiment on CPU.

A tiny Llama-architecture model gets a sentencepiece tokenizer and an SFT warm start on the
built-in arithmetic tasks, then CIPO steps. The step-0 checkpoint (after SFT, before RL) and the
final one are evaluated on held-out tasks (split "test"): pass@k and two-attempt self-correction.
Writes results.json and demo.png into the run directory. Settings: configs/demo.yaml.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML run config (default: configs/demo.yaml)")
    parser.add_argument("--run-dir", default=None, help="default: runs/demo/<timestamp> (a fresh directory)")
    parser.add_argument("--n", type=int, default=8, help="samples per held-out problem for pass@k")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides of the config, e.g. run.steps=10")


def run_demo(config: str | Path, overrides: list[str], *, run_dir: str | Path, n: int,
             progress: bool = True) -> dict:
    """Train, evaluate before/after RL, write results.json and demo.png; returns the results."""
    from cipo_jax.config import load_config
    from cipo_jax.evaluation.cli import evaluate_run
    from cipo_jax.evaluation.evaluate import format_table, paired_comparison
    from cipo_jax.evaluation.plots import plot_demo
    from cipo_jax.train.metrics import read_metrics
    from cipo_jax.train.trainer import train
    from cipo_jax.verifiers import VerifierPool

    run_dir = Path(run_dir)
    cfg = load_config(config, [*overrides, f"run.run_dir={run_dir}"])
    print(f"[demo] run dir {run_dir}: task {cfg.tasks.spec}, SFT {cfg.sft.steps} steps, "
          f"CIPO {cfg.run.steps} steps (C={cfg.cipo.C}, M={cfg.cipo.M}, B={cfg.grpo.num_prompts}, "
          f"G={cfg.grpo.group_size})", flush=True)
    t0 = time.perf_counter()
    summary = train(cfg, progress_bar=progress)
    t_train = time.perf_counter() - t0
    print(f"[demo] trained in {t_train:.0f} s; evaluating step 0 (after SFT) and step {summary['step']} "
          f"on {cfg.tasks.eval_size} held-out problems, n={n}", flush=True)
    evals = {}
    with VerifierPool(workers=cfg.run.verify_workers, timeout_s=cfg.run.verify_timeout_s) as pool:
        for name, step in (("before RL", 0), ("after RL", summary["step"])):
            evals[name] = evaluate_run(run_dir, step=step, tasks_spec=None, size=cfg.tasks.eval_size, pool=pool,
                                       n=n, temperature=cfg.sampling.temperature, seed=cfg.run.seed)
            print(f"[demo] {name}: pass@1 {evals[name]['pass_at_k']['1']:.3f}", flush=True)
    paired = paired_comparison(evals["before RL"], evals["after RL"], seed=cfg.run.seed)
    results = {"config": str(config), "overrides": list(overrides), "run_dir": str(run_dir),
               "seconds": {"train": t_train, "total": time.perf_counter() - t0},
               "num_distinct_problems": evals["after RL"]["num_distinct_problems"],
               "before": evals["before RL"], "after": evals["after RL"], "paired": paired}
    (run_dir / "results.json").write_text(json.dumps(results, indent=1))
    plot_demo(read_metrics(run_dir), evals, run_dir / "demo.png")
    print(format_table(evals, paired))
    d, (lo, hi) = paired["pass@1"]["diff"], paired["pass@1"]["ci95"]
    print(f"[demo] held-out pass@1 {d:+.3f} after RL (95% CI [{lo:+.3f}, {hi:+.3f}], paired bootstrap over "
          f"{results['num_distinct_problems']} distinct problems)")
    return results


def main(args: argparse.Namespace) -> int:
    run_dir = args.run_dir or Path("runs/demo") / time.strftime("%Y%m%d-%H%M%S")
    results = run_demo(args.config, args.overrides, run_dir=run_dir, n=args.n, progress=not args.no_progress)
    print(f"[demo] done in {results['seconds']['total']:.0f} s; results.json and demo.png in {run_dir}")
    return 0
