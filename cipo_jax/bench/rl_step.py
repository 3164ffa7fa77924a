"""`python -m cipo_jax bench rl-step`: our GRPO and CIPO steps on SmolLM2-135M (configs/smollm2.yaml:
B=8 x G=4, 48 new tokens, 4 micro-batches, float32) with their phase split, against TRL's
GRPOTrainer at the same shape when an interpreter with `trl` is given (requirements-bench.txt).

TRL runs first, in its own process (`bench/trl_grpo.py`), then ours in this one. Reported: mean
seconds per step after the warm-up steps, our GRPO step over TRL's, CIPO's step time over
GRPO's divided by its generated-token ratio (its overhead beyond the extra tokens; also with the
update priced by trained tokens, `bench.step.cipo_overhead`), and the
compile count and seconds after warm-up (a count that grows means a recompiling step).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/smollm2.yaml")
    parser.add_argument("--steps", type=int, default=2, help="measured steps per arm")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps per arm (compilation)")
    parser.add_argument("--arms", default="grpo,cipo", help="comma-separated subset of grpo,cipo")
    parser.add_argument("--trl-python", default=None,
                        help="interpreter with trl installed (e.g. /tmp/peers/bin/python); omit to skip TRL")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides for our arms")


def main(args: argparse.Namespace) -> int:
    from cipo_jax.bench.sample import cpu_description

    print(f"CPU: {cpu_description()}; load average {os.getloadavg()[0]:.1f} at start", flush=True)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(args, tmp, "grpo", [])
        if args.trl_python:
            results["trl"] = _run_trl(args, cfg, tmp)
            print(f"TRL GRPOTrainer: {results['trl']['step_s']:.1f} s/step (steps: "
                  f"{', '.join(f'{t:.1f}' for t in results['trl']['all_steps'])})", flush=True)
        from cipo_jax.bench.step import MEASURED, PHASES, cipo_overhead, measure, overhead_line

        for arm in [a for a in args.arms.split(",") if a]:
            print(f"measuring our {arm} ({args.warmup} warm-up + {args.steps} steps)...", flush=True)
            results[arm] = measure(_config(args, tmp, arm, []), args.steps, args.warmup)
    arms = [a for a in ("grpo", "cipo") if a in results]
    print(f"\n{'per step (mean)':<16}" + "".join(f"{a.upper():>10}" for a in arms))
    for k in (*PHASES, *MEASURED):
        print(f"{k:<16}" + "".join(f"{results[a][k]:>10.2f}" for a in arms))
    print("(ratios below use step_time_net: the step time less compiles of shapes first met in the measured steps)")
    if "trl" in results and "grpo" in results:
        results["grpo_over_trl"] = results["grpo"]["step_time_net"] / results["trl"]["step_s"]
        print(f"\nour GRPO step / TRL GRPOTrainer step: {results['grpo_over_trl']:.2f}x")
    if "grpo" in results and "cipo" in results:
        ratios = cipo_overhead(results["grpo"], results["cipo"])
        results["cipo_overhead"], results["cipo_ratios"] = ratios["overhead"], ratios
        print(overhead_line(ratios))
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def _config(args, tmp: str, arm: str, extra: list[str]):
    from cipo_jax.config import load_config

    arm_overrides = ["cipo.C=0"] if arm == "grpo" else []
    return load_config(args.config, [*args.overrides, *arm_overrides, *extra, f"run.run_dir={tmp}/{arm}",
                                     "run.log_tensorboard=false"])


def _run_trl(args, cfg, tmp: str) -> dict:
    from cipo_jax.train.policy import smollm2_gguf

    if cfg.model.source != "smollm2":
        raise SystemExit("bench rl-step: the TRL comparison runs SmolLM2 (model.source=smollm2) only")
    out = Path(tmp) / "trl.json"
    root = Path(__file__).resolve().parents[2]
    cmd = [args.trl_python, "-m", "cipo_jax.bench.trl_grpo", "--gguf", str(smollm2_gguf()),
           "--steps", str(args.warmup + args.steps), "--prompts", str(cfg.grpo.num_prompts),
           "--group", str(cfg.grpo.group_size), "--new-tokens", str(cfg.sampling.max_new_tokens),
           "--accum", str(cfg.optim.grad_accum), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run(cmd, check=True, env=env, cwd=tmp)
    times = json.loads(out.read_text())["step_s"]
    return {"step_s": float(np.mean(times[args.warmup:])), "all_steps": times}
