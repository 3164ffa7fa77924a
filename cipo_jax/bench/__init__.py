"""`python -m cipo_jax bench <name>`: benchmarks that report ratios against a reference measured
in the same run. Each benchmark module defines `add_arguments(parser)` and `main(args)`."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "sample": ("cipo_jax.bench.sample", "our sampler vs transformers generate on SmolLM2-135M"),
    "verify": ("cipo_jax.bench.verify", "math score_batch items/s and code sandbox runs/s"),
    "step": ("cipo_jax.bench.step", "train step time split, GRPO vs CIPO"),
    "rl-step": ("cipo_jax.bench.rl_step", "SmolLM2 GRPO / CIPO step vs TRL GRPOTrainer, phase split"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark")


def main(args: argparse.Namespace) -> int:
    module = importlib.import_module(BENCHMARKS[args.name][0])
    parser = argparse.ArgumentParser(prog=f"python -m cipo_jax bench {args.name}",
                                     description=BENCHMARKS[args.name][1])
    module.add_arguments(parser)
    return int(module.main(parser.parse_args(args.rest)) or 0)
