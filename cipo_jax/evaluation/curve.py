"""`python -m cipo_jax curve --run RUN_DIR [--size 256] [--n 8] [--train-size 256]`

A learning curve of one run: every saved checkpoint evaluated on the same held-out problems
(split "test") and, with --train-size, on training problems (split "train") to show the
generalisation gap. Each point carries its standard error and the paired difference to the
first checkpoint (step 0 = the policy after SFT) with a 95% bootstrap CI. Writes curve.json
into the run directory (or --out) and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a run directory with several checkpoints")
    parser.add_argument("--size", type=int, default=256, help="distinct held-out problems")
    parser.add_argument("--train-size", type=int, default=0, help="training problems to evaluate too (0: none)")
    parser.add_argument("--n", type=int, default=8, help="samples per problem for pass@k")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed, the same at every checkpoint")
    parser.add_argument("--out", default=None, help="JSON file (default: <run>/curve.json)")


def curve_point(result: dict, first: dict) -> dict:
    """The headline numbers of one evaluation, with its SE and the paired change since `first`."""
    from cipo_jax.evaluation.evaluate import paired_comparison

    paired = paired_comparison(first, result)
    return {"pass@1": result["pass_at_k"]["1"], "pass@1_se": result["pass_at_k_se"]["1"],
            "acc_t1": result["self_correction"]["acc_t1"], "delta": result["self_correction"]["delta"],
            "delta_se": result["self_correction_se"]["delta"],
            "pass@1_change": paired["pass@1"], "delta_change": paired["delta"]}


def main(args: argparse.Namespace) -> int:
    from cipo_jax.config import load_config
    from cipo_jax.evaluation.cli import evaluate_run
    from cipo_jax.train.checkpoint import Checkpointer
    from cipo_jax.verifiers import VerifierPool

    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    if not (run / "checkpoints").is_dir():
        raise FileNotFoundError(f"curve: no checkpoints under {run / 'checkpoints'}")
    ckpt = Checkpointer(run / "checkpoints", async_save=False)
    steps = ckpt.steps()
    ckpt.close()
    if not steps:
        raise FileNotFoundError(f"curve: no checkpoints under {run / 'checkpoints'}")
    splits = {"test": args.size, **({"train": args.train_size} if args.train_size else {})}
    points: dict[str, list[dict]] = {split: [] for split in splits}
    with VerifierPool(workers=cfg.run.verify_workers, timeout_s=cfg.run.verify_timeout_s) as pool:
        first: dict[str, dict] = {}
        for step in steps:
            for split, size in splits.items():
                result = evaluate_run(run, step=step, tasks_spec=None, size=size, pool=pool, split=split, n=args.n,
                                      temperature=cfg.sampling.temperature, seed=args.seed)
                first.setdefault(split, result)
                points[split].append({"step": step, **curve_point(result, first[split])})
                p = points[split][-1]
                lo, hi = p["pass@1_change"]["ci95"]
                print(f"[curve] step {step:5d} {split:5s} pass@1 {p['pass@1']:.3f} ± {p['pass@1_se']:.3f} "
                      f"(vs step {steps[0]}: {p['pass@1_change']['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]) "
                      f"delta {p['delta']:+.3f}", flush=True)
    out = Path(args.out) if args.out else run / "curve.json"
    out.write_text(json.dumps({"run": str(run), "n": args.n, "sizes": splits, "points": points}, indent=1))
    print(f"[curve] wrote {out}")
    return 0
