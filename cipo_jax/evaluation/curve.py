"""`python -m cipo_jax curve --run RUN_DIR [--run OTHER ...] [--size 256] [--n 8] [--train-size 256]`

Learning curves: every saved checkpoint of each run evaluated on the same held-out problems
(split "test") and, with --train-size, on training problems (split "train") to show the
generalisation gap. Each point carries its standard error and the paired difference to the
run's first checkpoint (step 0 = the policy after SFT) with a 95% bootstrap CI. Writes
curve.json into each run directory (a run that has one is not evaluated again unless --force),
prints the points, and draws all runs in one figure (--png, default <first run>/curve.png) with
their training reward.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, action="append", help="a run directory (repeat for several)")
    parser.add_argument("--label", action="append", default=None, help="legend label per --run (default: dir name)")
    parser.add_argument("--size", type=int, default=256, help="distinct held-out problems")
    parser.add_argument("--train-size", type=int, default=0, help="training problems to evaluate too (0: none)")
    parser.add_argument("--n", type=int, default=8, help="samples per problem for pass@k")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed, the same at every checkpoint")
    parser.add_argument("--png", default=None, help="figure path (default: <first run>/curve.png)")
    parser.add_argument("--force", action="store_true", help="evaluate runs that already have curve.json again")


def curve_point(result: dict, first: dict) -> dict:
    """The headline numbers of one evaluation, with its SE and the paired change since `first`."""
    from cipo_jax.evaluation.evaluate import paired_comparison

    paired = paired_comparison(first, result)
    return {"pass@1": result["pass_at_k"]["1"], "pass@1_se": result["pass_at_k_se"]["1"],
            "acc_t1": result["self_correction"]["acc_t1"], "delta": result["self_correction"]["delta"],
            "delta_se": result["self_correction_se"]["delta"],
            "pass@1_change": paired["pass@1"], "delta_change": paired["delta"]}


def evaluate_checkpoints(run: Path, *, size: int, train_size: int, n: int, seed: int) -> dict:
    """The curve of one run: {"run", "n", "sizes", "points": {split: [point per checkpoint]}}."""
    from cipo_jax.config import load_config
    from cipo_jax.evaluation.cli import evaluate_run
    from cipo_jax.train.runs import checkpoint_steps
    from cipo_jax.verifiers import VerifierPool

    steps = checkpoint_steps(run)
    if not steps:
        raise FileNotFoundError(f"curve: no checkpoints under {run / 'checkpoints'}")
    cfg = load_config(run / "config.yaml")
    splits = {"test": size, **({"train": train_size} if train_size else {})}
    points: dict[str, list[dict]] = {split: [] for split in splits}
    first: dict[str, dict] = {}
    with VerifierPool(workers=cfg.run.verify_workers, timeout_s=cfg.run.verify_timeout_s) as pool:
        for step in steps:
            for split, k in splits.items():
                result = evaluate_run(run, step=step, tasks_spec=None, size=k, pool=pool, split=split, n=n,
                                      temperature=cfg.sampling.temperature, seed=seed)
                first.setdefault(split, result)
                points[split].append({"step": step, **curve_point(result, first[split])})
                p = points[split][-1]
                lo, hi = p["pass@1_change"]["ci95"]
                print(f"[curve] {run.name} step {step:5d} {split:5s} pass@1 {p['pass@1']:.3f} ± {p['pass@1_se']:.3f} "
                      f"(vs step {steps[0]}: {p['pass@1_change']['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]) "
                      f"delta {p['delta']:+.3f}", flush=True)
    return {"run": str(run), "n": n, "sizes": splits, "points": points}


def main(args: argparse.Namespace) -> int:
    from cipo_jax.evaluation.plots import plot_curves
    from cipo_jax.train.metrics import read_metrics

    runs = [Path(r) for r in args.run]
    labels = args.label or [r.name for r in runs]
    if len(labels) != len(runs):
        raise ValueError(f"curve: {len(labels)} --label for {len(runs)} --run")
    curves = {}
    for label, run in zip(labels, runs):
        out = run / "curve.json"
        if out.exists() and not args.force:
            print(f"[curve] {run}: using its curve.json (--force to evaluate again)")
            curve = json.loads(out.read_text())
        else:
            curve = evaluate_checkpoints(run, size=args.size, train_size=args.train_size, n=args.n, seed=args.seed)
            out.write_text(json.dumps(curve, indent=1))
            print(f"[curve] wrote {out}")
        curves[label] = (curve, read_metrics(run))
    png = plot_curves(curves, Path(args.png) if args.png else runs[0] / "curve.png")
    print(f"[curve] figure {png}")
    return 0
