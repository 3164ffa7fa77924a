"""`python -m cipo_jax eval --checkpoint RUN_DIR --tasks SPEC [--n 8] [--size 64] [--rounds 2] ...`

Loads a run's checkpoint, evaluates it on held-out tasks (split "test"), prints a table and
writes the results as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a run directory (its config.yaml and checkpoints/)")
    parser.add_argument("--tasks", default=None, help="task spec (default: the run's tasks.spec); split 'test' is used")
    parser.add_argument("--n", type=int, default=8, help="samples per problem for pass@k (k = 1, 2, 4, ..., n)")
    parser.add_argument("--size", type=int, default=64, help="number of held-out problems")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for pass@k")
    parser.add_argument("--first-attempt", choices=("greedy", "sampled"), default="greedy",
                        help="t1 of self-correction: greedy, or sampled at --temperature")
    parser.add_argument("--rounds", type=int, default=2,
                        help="self-correction attempts: t1 and rounds - 1 corrections, each of the previous attempt")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (task selection uses the run's tasks.seed)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's sampling.max_new_tokens")
    parser.add_argument("--out", default=None, help="JSON file (default: <run dir>/eval_step<S>.json)")


def evaluate_run(run_dir: str | Path, *, step: int | None, tasks_spec: str | None, size: int, pool,
                 split: str = "test", **settings) -> dict:
    """Evaluate one checkpoint of a run on `size` distinct problems of `split` (held out by
    default; "train" measures the generalisation gap); the result records where it came from."""
    from cipo_jax.data.load import load_tasks
    from cipo_jax.evaluation.evaluate import evaluate_policy, settings_from_config
    from cipo_jax.train.policy import load_policy

    model, tokenizer, cfg, step = load_policy(run_dir, step)
    spec = tasks_spec or cfg.tasks.spec
    tasks = load_tasks(spec, size=size, seed=cfg.tasks.seed, split=split)
    settings = {k: v for k, v in settings.items() if v is not None}
    result = evaluate_policy(model, tokenizer, tasks, settings_from_config(cfg, **settings), pool)
    return {"run_dir": str(run_dir), "step": step, "tasks": spec, "split": split, **result}


def main(args: argparse.Namespace) -> int:
    from cipo_jax.evaluation.evaluate import format_table
    from cipo_jax.verifiers import VerifierPool

    try:
        with VerifierPool(workers=2) as pool:
            result = evaluate_run(args.checkpoint, step=args.step, tasks_spec=args.tasks, size=args.size, pool=pool,
                                  n=args.n, temperature=args.temperature, first_attempt=args.first_attempt,
                                  seed=args.seed, max_new_tokens=args.max_new_tokens, rounds=args.rounds)
    except (FileNotFoundError, ValueError) as e:
        print(f"eval: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.checkpoint) / f"eval_step{result['step']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"{result['tasks']} (test split), {result['num_problems']} problems, n={args.n}, "
          f"T={args.temperature}, t1 {args.first_attempt}, {args.rounds} rounds")
    print(format_table({f"step {result['step']}": result}))
    print(f"wrote {out}")
    return 0
