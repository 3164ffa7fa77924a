"""`python -m cipo_jax compare --config FILE [--arms grpo,cipo] [--seeds 3] [--n 8] [--steps N] [--out DIR] [key=value ...]`

One run per (arm, seed), run.seed = seed. An arm is a named preset (ARMS): overrides on top of the
config and the user's `key=value` overrides (which apply to every arm; an arm's own keys win), so
an ablation is one command. Seeds are paired: the arms of a seed start from the same warm start
(the SFT result does not depend on the arm, so the first arm's step-0 checkpoint and tokenizer are
copied into the other arms' run directories, which resume from it), and are evaluated on the same
held-out problems (tasks.eval_size of the test split, drawn with tasks.seed) with the same
sampling seed (the run seed). Two views:

- equal steps: every run after the same number of RL steps (its final checkpoint);
- equal generated-token budget: CIPO spends extra tokens on corrections, so each step costs it
  more. The budget is the largest cumulative token count (sum of the per-step `tokens` metric)
  that EVERY run reaches. Each run is read at the first step where its cumulative tokens reach
  the budget: training reward averaged over the `--window` steps ending there, and the eval of
  its latest checkpoint at or before that step (set run.ckpt_every small to make that close).

Reported per view: each run's metrics with standard errors over problems and its per-problem
outcomes (compare.json "per_seed"); each arm's mean ± SE over seeds; each arm against the baseline
(grpo when it is an arm, else the first arm): the paired difference with a 95% bootstrap CI over
seeds x problems for held-out metrics (over seeds for training reward, steps, tokens and time),
and the smallest pass@1 difference the design detects with 80% power (two-sided 5%), from the
seed, problem and residual variance components measured. Seeds x problems is a crossed design
(every seed sees the same problems), and both the bootstrap and the power figure treat it so.

Resume: a run whose final checkpoint exists is not trained again and every evaluation is cached
in its run directory (evals/), so a killed comparison rerun with the same --out redoes nothing
that finished. `--reuse DIR` links the finished runs of another comparison's --out (e.g. the main
comparison's grpo and cipo seeds into an ablation) when their saved config is the one this
comparison would train; a different config is an error naming the keys.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

ARMS: dict[str, tuple[str, ...]] = {
    "grpo": ("cipo.C=0",),  # no correction stream: GRPO through the same code path
    "cipo": (),  # the config's CIPO
    "cipo-no-nll": ("cipo.gamma_nll=0",),  # without the correction log-likelihood term
    "cipo-no-pg": ("cipo.alpha_corr=0",),  # the likelihood term alone
    "cipo-no-risk": ("cipo.lambda_risk=0",),  # no penalty on correct -> wrong revisions
    "cipo-fixed-rho": ("cipo.eta_rho=0",),  # the replay ratio stays at rho_init
    "cipo-uniform": ("cipo.priority=uniform",),  # sources drawn uniformly, not by p(1-p) + eta
}
SELF_CORRECTION = ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i")
PER_SEED = ("train_reward", "step", "eval_step", "tokens", "wall_s")  # one value per run, not per problem
LABELS = {"train_reward": "training reward (window mean)", "acc_t1": "acc@t1", "acc_t2": "acc@t2",
          "delta": "delta", "delta_i2c": "delta(i->c)", "delta_c2i": "delta(c->i)", "step": "RL step",
          "eval_step": "evaluated checkpoint", "tokens": "generated tokens", "wall_s": "RL wall time (s)"}
COUNTS = ("step", "eval_step", "tokens", "wall_s")  # printed without decimals
VIEWS = {"equal_steps": "Equal steps (final checkpoints)",
         "equal_tokens": "Equal generated-token budget ({budget:.0f} tokens, the most every run reaches)"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML run config shared by every arm")
    parser.add_argument("--arms", default="grpo,cipo",
                        help=f"comma-separated arms, the baseline grpo (if listed) or the first: {', '.join(ARMS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 per arm (>= 2)")
    parser.add_argument("--steps", type=int, default=None, help="RL steps per run (default: the config's run.steps)")
    parser.add_argument("--out", default=None,
                        help="output directory (default: runs/compare/<timestamp>); the same --out resumes")
    parser.add_argument("--reuse", default=None,
                        help="another compare's --out: its finished runs of the same arm, seed and config are linked, not retrained")
    parser.add_argument("--n", type=int, default=8, help="samples per held-out problem: pass@k for k = 1, 2, 4, ..., n")
    parser.add_argument("--window", type=int, default=5, help="steps averaged for the training reward")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides applied to every arm")


# ---------------------------------------------------------------------------------- arms
def parse_arms(text: str) -> list[str]:
    """'grpo,cipo' -> ["grpo", "cipo"]: known, distinct, at least two."""
    arms = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"compare: unknown arm {', '.join(map(repr, unknown))}; valid arms: {', '.join(ARMS)}")
    if len(arms) < 2 or len(set(arms)) != len(arms):
        raise ValueError(f"compare: --arms needs at least two distinct arms, got {text!r}")
    return arms


def baseline_of(arms: list[str]) -> str:
    """The arm every other is compared with: GRPO when it runs, else the first listed."""
    return "grpo" if "grpo" in arms else arms[0]


def arm_overrides(overrides: list[str], arm: str) -> list[str]:
    """The user's overrides with the arm's own settings in place of any the user gave (e.g. cipo.C)."""
    owned = {o.partition("=")[0] for o in ARMS[arm]}
    return [o for o in overrides if o.partition("=")[0] not in owned] + list(ARMS[arm])


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


def run_row(seed: int, result: dict[str, Any], metrics: list[dict[str, Any]], end: int, window: int) -> dict[str, Any]:
    """One run read at its metrics row `end` with the evaluation `result` of a checkpoint at or
    before it: training reward, tokens and RL wall time up to there, every held-out metric with
    its SE over problems, and the per-problem outcomes the paired CIs are computed from."""
    return {"seed": seed, "step": metrics[end]["step"], "eval_step": result["step"],
            "tokens": float(sum(m["tokens"] for m in metrics[:end + 1])),
            "wall_s": float(sum(m.get("step_time") or 0.0 for m in metrics[:end + 1])),
            "train_reward": window_mean([m.get("reward_mean") for m in metrics], end, window),
            **{f"pass@{k}": v for k, v in result["pass_at_k"].items()}, **result["self_correction"],
            "se": {**{f"pass@{k}": v for k, v in result["pass_at_k_se"].items()}, **result["self_correction_se"]},
            "per_problem": result["per_problem"]}


def metric_keys(row: dict[str, Any]) -> list[str]:
    """The row's metrics in table order: training reward, pass@k by k, self-correction, counts."""
    ks = sorted(int(key[5:]) for key in row if key.startswith("pass@"))
    return ["train_reward", *(f"pass@{k}" for k in ks), *SELF_CORRECTION, *COUNTS]


def problem_values(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """{held-out metric: (seeds, problems) per-problem values} of one arm's runs; the seeds share
    the held-out problems, so two arms' arrays are aligned cell by cell."""
    from cipo_jax.evaluation.evaluate import per_problem_metrics

    keys = [k for k in metric_keys(rows[0]) if k not in PER_SEED]
    per_seed = [per_problem_metrics({"per_problem": r["per_problem"],
                                     "pass_at_k": {k[5:]: r[k] for k in keys if k.startswith("pass@")}})
                for r in rows]
    return {key: np.stack([p[key] for p in per_seed]) for key in keys}


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """One arm's runs -> {metric: {"mean", "se"}} over seeds."""
    from cipo_jax.stats import mean_se

    out = {}
    for key in metric_keys(rows[0]):
        mean, se = mean_se(np.array([r[key] for r in rows], np.float64))
        out[key] = {"mean": mean, "se": se}
    return out


def paired(base: list[dict[str, Any]], arm: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{metric: {"diff", "ci95", "se"}} of arm - base, seed by seed: a crossed bootstrap over
    seeds x problems (seeds and problems each resampled once per resample) for held-out metrics,
    over seeds for the per-run ones."""
    from cipo_jax.stats import paired_bootstrap

    if [r["seed"] for r in base] != [r["seed"] for r in arm]:
        raise ValueError("compare: the two arms ran different seeds")
    b, a = problem_values(base), problem_values(arm)
    out = {}
    for key in metric_keys(base[0]):
        if key in PER_SEED:
            out[key] = paired_bootstrap(np.array([r[key] for r in base]), np.array([r[key] for r in arm]))
        else:
            out[key] = paired_bootstrap(b[key], a[key])
    return out


def power(base: list[dict[str, Any]], arm: list[dict[str, Any]]) -> dict[str, float]:
    """The smallest pass@1 difference (arm - base) detected with 80% power by a two-sided 5% test,
    for this many seeds and problems, from the variance components (seed, problem, residual) of
    the paired differences in the crossed seeds x problems design."""
    from cipo_jax.stats import design_se, min_detectable_difference, variance_components

    d = problem_values(arm)["pass@1"] - problem_values(base)["pass@1"]  # (S, P)
    var_seed, var_problem, var_residual = variance_components(d)
    se = design_se(var_seed, var_problem, var_residual, *d.shape)
    return {"seeds": d.shape[0], "problems": d.shape[1], "var_seed": var_seed, "var_problem": var_problem,
            "var_residual": var_residual, "se": se, "mdd": min_detectable_difference(se)}


def pass_at_k_curve(summary: dict[str, dict[str, float]]) -> dict[str, list[float]]:
    """{"k", "mean", "se"}: one arm's pass@k against k, mean ± SE over seeds."""
    ks = sorted(int(key[5:]) for key in summary if key.startswith("pass@"))
    return {"k": ks, "mean": [summary[f"pass@{k}"]["mean"] for k in ks], "se": [summary[f"pass@{k}"]["se"] for k in ks]}


def compare_view(rows: dict[str, list[dict[str, Any]]], baseline: str) -> dict[str, Any]:
    """Everything reported about one view, from its per-seed rows {arm: [row per seed]}."""
    summary = {arm: summarize(r) for arm, r in rows.items()}
    others = [arm for arm in rows if arm != baseline]
    return {"per_seed": rows, "summary": summary,
            "paired": {arm: paired(rows[baseline], rows[arm]) for arm in others},
            "power": {arm: power(rows[baseline], rows[arm]) for arm in others},
            "pass_at_k": {arm: pass_at_k_curve(s) for arm, s in summary.items()}}


def _cell(key: str, value: float, spread: str) -> str:
    return f"{value:.0f}{spread}" if key in COUNTS else f"{value:.3f}{spread}"


def markdown_table(view: dict[str, Any], baseline: str) -> str:
    """One row per metric: each arm's mean ± SE over seeds, then each arm - baseline [95% CI]."""
    arms, others = list(view["summary"]), list(view["paired"])
    header = ["metric", *arms, *(f"{arm} − {baseline} [95% CI]" for arm in others)]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for key in metric_keys(view["per_seed"][arms[0]][0]):
        label = LABELS.get(key, f"held-out {key}")
        cells = [_cell(key, s["mean"], "") + " ± " + _cell(key, s["se"], "")
                 for s in (view["summary"][arm][key] for arm in arms)]
        for arm in others:
            p = view["paired"][arm][key]
            fmt = "{:+.0f}" if key in COUNTS else "{:+.3f}"
            cells.append(f"{fmt.format(p['diff'])} [{fmt.format(p['ci95'][0])}, {fmt.format(p['ci95'][1])}]")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def power_statement(view: dict[str, Any], baseline: str) -> str:
    parts = [f"{arm} vs {baseline}: {p['mdd']:.3f} (seed variance {p['var_seed']:.2e}, problem variance "
             f"{p['var_problem']:.2e}, residual variance {p['var_residual']:.2e})"
             for arm, p in view["power"].items()]
    p = next(iter(view["power"].values()))
    return (f"Smallest pass@1 difference detected with 80% power (two-sided 5%) with {p['seeds']} seeds x "
            f"{p['problems']} problems: " + "; ".join(parts) + ".")


def markdown_report(views: dict[str, dict[str, Any]], baseline: str, budget: float) -> str:
    """compare.md: per view its table and power statement; CIs over seeds x problems for held-out
    metrics, over seeds for the per-run ones."""
    blocks = [f"{VIEWS[name].format(budget=budget)}:\n\n{markdown_table(view, baseline)}\n\n"
              f"{power_statement(view, baseline)}\n" for name, view in views.items()]
    note = ("Mean ± standard error over seeds. Paired differences: 95% bootstrap CI over seeds x problems, "
            "crossed (held-out metrics), or over seeds (training reward, steps, tokens, time).\n")
    return note + "\n" + "\n".join(blocks)


def progress_line(done: int, total: int, elapsed: float, worked: int) -> str:
    """'3/6 runs done, 4m10s elapsed, ETA 4m10s': the ETA from the mean time of the runs this
    invocation trained or evaluated (finished ones it reused cost nothing)."""
    eta = "ETA ?" if worked == 0 else f"ETA {_duration(elapsed / worked * (total - done))}"
    return f"[compare] {done}/{total} runs done, {_duration(elapsed)} elapsed, {eta}"


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ------------------------------------------------------------------------------- the runs
def run_dir_of(out: Path, arm: str, seed: int) -> Path:
    return out / f"{arm}-seed{seed}"


def eval_cache_path(run_dir: Path, step: int, *, n: int, size: int, seed: int) -> Path:
    return run_dir / "evals" / f"step{step}-n{n}-size{size}-seed{seed}.json"


def run_config(config: str, overrides: list[str], arm: str, seed: int, run_dir: Path, steps: int):
    """The resolved config of one (arm, seed) run."""
    from cipo_jax.config import load_config

    return load_config(config, [*arm_overrides(overrides, arm), f"run.seed={seed}", f"run.run_dir={run_dir}",
                                f"run.steps={steps}"])


def config_differences(expected: dict[str, Any], found: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts, run.run_dir aside (a run's own path)."""
    keys = sorted(set(expected) | set(found))
    out = []
    for key in keys:
        name, a, b = f"{prefix}{key}", expected.get(key), found.get(key)
        if name == "run.run_dir":
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name} ({b!r} there, {a!r} here)")
    return out


def link_finished_run(config: str, overrides: list[str], arm: str, seed: int, steps: int, source: Path,
                      run_dir: Path) -> bool:
    """Link `source` (another comparison's run of this arm and seed) as `run_dir` when it reached
    `steps` with the config this comparison would train; whether it was linked. A finished run
    with another config raises instead of being mixed into the report."""
    from cipo_jax.config import load_config
    from cipo_jax.configlib import to_dict
    from cipo_jax.train.runs import checkpoint_steps

    if run_dir.exists() or steps not in checkpoint_steps(source):
        return False
    expected = to_dict(run_config(config, overrides, arm, seed, run_dir, steps))
    differences = config_differences(expected, to_dict(load_config(source / "config.yaml")))
    if differences:
        raise ValueError(f"compare --reuse: {source} was trained with another config: {'; '.join(differences)}")
    run_dir.symlink_to(os.path.relpath(source.resolve(), run_dir.parent.resolve()), target_is_directory=True)
    print(f"[compare] {arm} seed {seed}: reusing {source}", flush=True)
    return True


def train_run(config: str, overrides: list[str], arm: str, seed: int, run_dir: Path, steps: int,
              progress: bool) -> bool:
    """Train one (arm, seed) to `steps` unless its final checkpoint exists; whether it trained."""
    from cipo_jax.train.runs import checkpoint_steps, launch

    if steps in checkpoint_steps(run_dir):
        return False
    cfg = run_config(config, overrides, arm, seed, run_dir, steps)
    print(f"[compare] {arm} seed {seed} -> {run_dir}", flush=True)
    launch(cfg, progress_bar=progress)
    return True


def cached_evaluate(run_dir: Path, step: int, evaluate: Callable[..., dict[str, Any]], *, n: int, size: int,
                    seed: int) -> tuple[dict[str, Any], bool]:
    """The evaluation of one checkpoint, from its cache file when one exists; (result, whether it ran)."""
    path = eval_cache_path(run_dir, step, n=n, size=size, seed=seed)
    if path.exists():
        return json.loads(path.read_text()), False
    result = evaluate(run_dir, step=step, n=n, size=size, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)  # atomic: a kill leaves no half-written cache
    return result, True


def main(args: argparse.Namespace) -> int:
    from cipo_jax.config import load_config
    from cipo_jax.evaluation.cli import evaluate_run
    from cipo_jax.evaluation.plots import plot_compare
    from cipo_jax.train.metrics import read_metrics
    from cipo_jax.train.runs import checkpoint_steps, share_warm_start
    from cipo_jax.verifiers import VerifierPool

    arms = parse_arms(args.arms)
    baseline = baseline_of(arms)
    if args.seeds < 2:
        raise ValueError("compare: --seeds must be >= 2 to measure seed-to-seed variance")
    cfg = load_config(args.config, args.overrides)
    steps = args.steps if args.steps is not None else cfg.run.steps
    size = cfg.tasks.eval_size
    out = Path(args.out or Path("runs/compare") / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"[compare] arms {', '.join(arms)} (baseline {baseline}) x {args.seeds} seeds, {steps} steps, "
          f"{size} held-out problems, n = {args.n} -> {out}", flush=True)
    t0, total, done, worked = time.perf_counter(), len(arms) * args.seeds, 0, 0
    with VerifierPool(workers=cfg.run.verify_workers, timeout_s=cfg.run.verify_timeout_s) as pool:
        held_out = partial(evaluate_run, tasks_spec=None, pool=pool, temperature=cfg.sampling.temperature)

        def evaluate(run_dir: Path, step: int, seed: int) -> tuple[dict[str, Any], bool]:
            return cached_evaluate(run_dir, step, held_out, n=args.n, size=size, seed=seed)

        finals: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
        for seed in range(args.seeds):
            for arm in arms:
                run_dir = run_dir_of(out, arm, seed)
                if args.reuse:
                    link_finished_run(args.config, args.overrides, arm, seed, steps,
                                      run_dir_of(Path(args.reuse), arm, seed), run_dir)
                if arm != arms[0]:
                    share_warm_start(run_dir_of(out, arms[0], seed), run_dir)
                trained = train_run(args.config, args.overrides, arm, seed, run_dir, steps, not args.no_progress)
                result, evaluated = evaluate(run_dir, steps, seed)
                finals[arm].append(result)
                done, worked = done + 1, worked + (trained or evaluated)
                print(progress_line(done, total, time.perf_counter() - t0, worked), flush=True)

        metrics = {arm: [read_metrics(run_dir_of(out, arm, s)) for s in range(args.seeds)] for arm in arms}
        budget = min(sum(m["tokens"] for m in ms) for per in metrics.values() for ms in per)
        rows: dict[str, dict[str, list[dict[str, Any]]]] = {"equal_steps": {}, "equal_tokens": {}}
        for arm in arms:
            rows["equal_steps"][arm], rows["equal_tokens"][arm] = [], []
            for seed, (ms, final) in enumerate(zip(metrics[arm], finals[arm])):
                run_dir = run_dir_of(out, arm, seed)
                rows["equal_steps"][arm].append(run_row(seed, final, ms, len(ms) - 1, args.window))
                end = budget_step(np.cumsum([m["tokens"] for m in ms]), budget)
                ckpt = max(s for s in checkpoint_steps(run_dir) if s <= ms[end]["step"])
                at_budget = final if ckpt == steps else evaluate(run_dir, ckpt, seed)[0]
                rows["equal_tokens"][arm].append(run_row(seed, at_budget, ms, end, args.window))

    views = {name: compare_view(r, baseline) for name, r in rows.items()}
    report = {"config": args.config, "overrides": args.overrides, "arms": {arm: list(ARMS[arm]) for arm in arms},
              "baseline": baseline, "seeds": args.seeds, "steps": steps, "n": args.n, "eval_size": size,
              "window": args.window, "token_budget": budget, "seconds": time.perf_counter() - t0,
              "runs": {arm: [str(run_dir_of(out, arm, s)) for s in range(args.seeds)] for arm in arms},
              **views}
    (out / "compare.json").write_text(json.dumps(report, indent=1))
    md = markdown_report(views, baseline, budget)
    (out / "compare.md").write_text(md)
    plot_compare(metrics, {name: view["pass_at_k"] for name, view in views.items()}, out / "compare.png",
                 window=args.window)
    print(md)
    print(f"[compare] {len(arms)} arms x {args.seeds} seeds in {_duration(report['seconds'])}; compare.md, "
          f"compare.json, compare.png in {out}")
    return 0
