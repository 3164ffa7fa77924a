"""Train-step time split into sampling / verification / update, GRPO vs CIPO at equal prompts.

Both arms run in this process with everything equal but the correction stream (cipo.C = 0 for
GRPO). After warm-up steps (compilation), it reports the mean seconds per phase and compares
CIPO's extra step time with its extra generated tokens: a ratio near 1 means the correction
stream costs nothing beyond the tokens it generates.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--steps", type=int, default=4, help="measured steps per arm")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps per arm (compilation)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides for both arms")


PHASES = ("time_sample", "time_verify", "time_update", "step_time", "tokens", "trained_tokens", "compiles",
          "compile_s")
MEASURED = ("recompiles", "recompile_s", "step_time_net")  # from the measured steps (see measure)


def measure(cfg, steps: int, warmup: int) -> dict[str, float]:
    from cipo_jax.train.rollout import RolloutWorker
    from cipo_jax.train.trainer import Trainer
    from cipo_jax.verifiers import VerifierPool

    trainer = Trainer(cfg, progress_bar=False)
    try:
        with VerifierPool(workers=cfg.run.verify_workers, timeout_s=cfg.run.verify_timeout_s) as pool:
            worker = RolloutWorker(cfg, trainer.tokenizer, pool, trainer.mesh)
            rows = [trainer.rl_step(worker) for _ in range(warmup + steps)]
    finally:
        trainer.close()
    out = {k: float(np.mean([r[k] for r in rows[warmup:]])) for k in PHASES}
    # XLA programs compiled during the measured steps: 0 when warm-up compiled every shape. A
    # shape first seen there (row and length buckets vary with the rollouts) is compiled once
    # per run; the steady-state step time leaves its seconds out.
    before = rows[warmup - 1] if warmup else {"compiles": 0.0, "compile_s": 0.0}
    out["recompiles"] = rows[-1]["compiles"] - before["compiles"]
    out["recompile_s"] = (rows[-1]["compile_s"] - before["compile_s"]) / steps
    out["step_time_net"] = out["step_time"] - out["recompile_s"]
    return out


def overhead_line(r: dict[str, float]) -> str:
    return (f"CIPO/GRPO step time {r['step_time']:.2f}x for {r['tokens']:.2f}x the generated tokens and "
            f"{r['trained_tokens']:.2f}x the trained tokens: {r['overhead']:.2f}x beyond the extra generated "
            f"tokens, {r['overhead_by_phase']:.2f}x beyond the extra work of each phase")


def cipo_overhead(grpo: dict[str, float], cipo: dict[str, float]) -> dict[str, float]:
    """CIPO's step time against GRPO's scaled by CIPO's extra work, two ways.

    `overhead`: step-time ratio / generated-token ratio (every second priced per generated token).
    `overhead_by_phase`: CIPO's step over GRPO's phases each scaled by its own work, sampling (and
    the rest of the step) by generated tokens, the update by trained tokens: what is left is the
    cost of handling the correction stream, e.g. its padding or its smaller decode batch."""
    tokens = cipo["tokens"] / grpo["tokens"]
    trained = cipo["trained_tokens"] / grpo["trained_tokens"]
    step = cipo["step_time_net"] / grpo["step_time_net"]
    rest = grpo["step_time_net"] - grpo["time_update"]
    expected = rest * tokens + grpo["time_update"] * trained
    return {"step_time": step, "tokens": tokens, "trained_tokens": trained, "overhead": step / tokens,
            "overhead_by_phase": cipo["step_time_net"] / expected}


def main(args: argparse.Namespace) -> int:
    from cipo_jax.config import load_config

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arm, extra in (("grpo", ["cipo.C=0"]), ("cipo", [])):
            cfg = load_config(args.config, [*args.overrides, *extra, f"run.run_dir={tmp}/{arm}",
                                            "run.log_tensorboard=false"])
            print(f"measuring {arm} ({args.warmup} warm-up + {args.steps} steps)...", flush=True)
            results[arm] = measure(cfg, args.steps, args.warmup)
    g, c = results["grpo"], results["cipo"]
    print(f"\n{'phase (s/step)':<16}{'GRPO':>10}{'CIPO':>10}")
    for k in (*PHASES, *MEASURED):
        print(f"{k:<16}{g[k]:>10.3f}{c[k]:>10.3f}")
    results["ratios"] = r = cipo_overhead(g, c)
    print(f"\n{overhead_line(r)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0
