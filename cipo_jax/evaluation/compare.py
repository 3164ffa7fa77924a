"""`python -m cipo_jax compare --config FILE --seeds 3 [--steps N] [--out DIR] [overrides...]`

GRPO (cipo.C = 0) against CIPO, everything else identical, one run per (arm, seed) with
run.seed = seed. Each run's final checkpoint is evaluated on held-out tasks. Two views:

- equal steps: every run after the same number of RL steps;
- equal generated-token budget: CIPO spends extra tokens on corrections, so each step costs it
  more. The budget is the largest cumulative token count (sum of the per-step `tokens` metric)
  that EVERY run reaches. Each run is read at the first step where its cumulative tokens reach
  the budget: training reward averaged over the `--window` steps ending there, and the eval of
  its latest checkpoint at or before that step (set run.ckpt_every small to make that close).

Both arms of a seed start from the same warm start: the SFT result of a seed does not depend on
the arm, so the first arm's step-0 checkpoint (and tokenizer) is copied into the second arm's run
directory, which then resumes from it instead of repeating SFT. Numbers are mean +- sample std
(ddof=1) over seeds. Finished runs are reused (the trainer
resumes from their checkpoints), so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ARMS = {"GRPO": ["cipo.C=0"], "CIPO": []}
TABLE_METRICS = (("train_reward", "training reward (window mean)"), ("pass@1", "held-out pass@1"),
                 ("pass@max", "held-out pass@n"), ("acc_t1", "acc@t1"), ("acc_t2", "acc@t2"),
                 ("delta", "delta"), ("delta_i2c", "delta(i->c)"), ("delta_c2i", "delta(c->i)"),
                 ("step", "RL step"), ("tokens", "generated tokens"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML run config shared by both arms")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 per arm")
    parser.add_argument("--steps", type=int, default=None, help="RL steps per run (default: the config's run.steps)")
    parser.add_argument("--out", default=None, help="output directory (default: runs/compare/<timestamp>)")
    parser.add_argument("--n", type=int, default=8, help="samples per held-out problem for pass@k")
    parser.add_argument("--window", type=int, default=5, help="steps averaged for the training reward")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides applied to both arms")


# ---------------------------------------------------------------------------------- pure parts
def budget_step(cum_tokens: np.ndarray, budget: float) -> int:
    """Index of the first step whose cumulative token count reaches `budget`."""
    reached = np.flatnonzero(np.asarray(cum_tokens) >= budget)
    if reached.size == 0:
        raise ValueError(f"compare: a run never reaches the token budget {budget:g}")
    return int(reached[0])


def window_mean(values: list[float | None], end: int, window: int) -> float:
    """Mean of values[end-window+1 .. end], missing (None) entries skipped."""
    chunk = [v for v in values[max(0, end - window + 1):end + 1] if v is not None]
    return float(np.mean(chunk)) if chunk else float("nan")


def eval_row(result: dict[str, Any]) -> dict[str, float]:
    ks = sorted(int(k) for k in result["pass_at_k"])
    return {"pass@1": result["pass_at_k"]["1"], "pass@max": result["pass_at_k"][str(ks[-1])],
            **result["self_correction"]}


def mean_std(values: list[float]) -> tuple[float, float]:
    x = np.asarray(values, np.float64)
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0


def summarize(rows: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, tuple[float, float]]]:
    """{arm: [per-seed row]} -> {arm: {metric: (mean, std)}}."""
    return {arm: {key: mean_std([r[key] for r in runs]) for key in runs[0]} for arm, runs in rows.items()}


def markdown_table(summary: dict[str, dict[str, tuple[float, float]]]) -> str:
    arms = list(summary)
    lines = ["| metric | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for key, label in TABLE_METRICS:
        if key not in summary[arms[0]]:
            continue
        cells = []
        for arm in arms:
            m, s = summary[arm][key]
            cells.append(f"{m:.0f} ± {s:.0f}" if key in ("step", "tokens") else f"{m:.3f} ± {s:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- the runs
def arm_overrides(overrides: list[str], arm: str) -> list[str]:
    """The user's overrides with the arm's own settings in place of any the user gave (e.g. cipo.C)."""
    owned = {o.partition("=")[0] for o in ARMS[arm]}
    return [o for o in overrides if o.partition("=")[0] not in owned] + ARMS[arm]


def run_dir_of(out: Path, arm: str, seed: int) -> Path:
    return out / f"{arm.lower()}-seed{seed}"


def run_arm(config: str, overrides: list[str], arm: str, seed: int, out: Path, steps: int | None,
            progress: bool) -> Path:
    from cipo_jax.config import load_config
    from cipo_jax.train.runs import launch

    run_dir = run_dir_of(out, arm, seed)
    extra = [f"run.seed={seed}", f"run.run_dir={run_dir}"]
    if steps is not None:
        extra.append(f"run.steps={steps}")
    cfg = load_config(config, [*arm_overrides(overrides, arm), *extra])
    print(f"[compare] {arm} seed {seed} -> {run_dir}", flush=True)
    launch(cfg, progress_bar=progress)
    return run_dir


def main(args: argparse.Namespace) -> int:
    from cipo_jax.config import load_config
    from cipo_jax.evaluation.cli import evaluate_run
    from cipo_jax.evaluation.plots import plot_compare
    from cipo_jax.train.metrics import read_metrics
    from cipo_jax.train.runs import checkpoint_steps, share_warm_start
    from cipo_jax.verifiers import VerifierPool

    if args.seeds < 2:
        raise SystemExit("compare: --seeds must be >= 2 to report a spread")
    out = Path(args.out or Path("runs/compare") / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs: dict[str, list[Path]] = {arm: [] for arm in ARMS}
    first, *others = ARMS
    for seed in range(args.seeds):
        runs[first].append(run_arm(args.config, args.overrides, first, seed, out, args.steps, not args.no_progress))
        for arm in others:
            share_warm_start(runs[first][-1], run_dir_of(out, arm, seed))
            runs[arm].append(run_arm(args.config, args.overrides, arm, seed, out, args.steps, not args.no_progress))
    t_train = time.perf_counter() - t0

    metrics = {arm: [read_metrics(d) for d in dirs] for arm, dirs in runs.items()}
    cum = {arm: [np.cumsum([m["tokens"] for m in ms]) for ms in per] for arm, per in metrics.items()}
    budget = min(float(c[-1]) for per in cum.values() for c in per)

    cfg = load_config(Path(runs["CIPO"][0]) / "config.yaml")
    views: dict[str, dict[str, list[dict[str, float]]]] = {"equal_steps": {}, "equal_tokens": {}}
    evals: dict[str, list[dict[str, Any]]] = {}
    with VerifierPool(workers=cfg.run.verify_workers, timeout_s=cfg.run.verify_timeout_s) as pool:
        def evaluate(run_dir: Path, step: int) -> dict[str, Any]:
            return evaluate_run(run_dir, step=step, tasks_spec=None, size=cfg.tasks.eval_size, pool=pool,
                                n=args.n, temperature=cfg.sampling.temperature, seed=0)

        for arm, dirs in runs.items():
            views["equal_steps"][arm], views["equal_tokens"][arm], evals[arm] = [], [], []
            for run_dir, ms, c in zip(dirs, metrics[arm], cum[arm]):
                rewards = [m.get("reward_mean") for m in ms]
                final = evaluate(run_dir, checkpoint_steps(run_dir)[-1])
                evals[arm].append(final)
                views["equal_steps"][arm].append({"train_reward": window_mean(rewards, len(ms) - 1, args.window),
                                                  **eval_row(final), "step": ms[-1]["step"], "tokens": float(c[-1])})
                i = budget_step(c, budget)
                ckpt = max(s for s in checkpoint_steps(run_dir) if s <= ms[i]["step"])
                at_budget = final if ckpt == final["step"] else evaluate(run_dir, ckpt)
                views["equal_tokens"][arm].append({"train_reward": window_mean(rewards, i, args.window),
                                                   **eval_row(at_budget), "step": ms[i]["step"],
                                                   "tokens": float(c[i]), "eval_step": ckpt})
    summaries = {view: summarize(rows) for view, rows in views.items()}
    seconds = time.perf_counter() - t0
    report = {"config": args.config, "overrides": args.overrides, "seeds": args.seeds, "steps": args.steps,
              "window": args.window, "n": args.n, "token_budget": budget, "seconds": {"train": t_train, "total": seconds},
              "runs": {arm: [str(d) for d in dirs] for arm, dirs in runs.items()},
              "per_seed": views, "summary": summaries}
    (out / "compare.json").write_text(json.dumps(report, indent=1))
    md = (f"Equal steps (final checkpoints):\n\n{markdown_table(summaries['equal_steps'])}\n\n"
          f"Equal generated-token budget ({budget:.0f} tokens, the most every run reaches):\n\n"
          f"{markdown_table(summaries['equal_tokens'])}\n")
    (out / "compare.md").write_text(md)
    plot_compare(metrics, evals, out / "compare.png", window=args.window)
    print(md)
    print(f"[compare] {args.seeds} seeds x {len(ARMS)} arms in {seconds:.0f} s; compare.md, compare.json, "
          f"compare.png in {out}")
    return 0
