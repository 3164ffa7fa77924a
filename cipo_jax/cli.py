"""`python -m cipo_jax <command>`: one table of commands, each implemented in its own module.

A command module defines `add_arguments(parser)` and `main(args) -> int`. Modules are imported
only when their command runs, so `--help` stays fast and host-only commands never load JAX.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "train": ("cipo_jax.train.cli", "train with CIPO / GRPO / SFT from a YAML config"),
    "eval": ("cipo_jax.evaluation.cli", "pass@k and two-attempt self-correction of a checkpoint"),
    "curve": ("cipo_jax.evaluation.curve", "evaluate every checkpoint of a run: a learning curve with error bars"),
    "compare": ("cipo_jax.evaluation.compare", "GRPO vs CIPO and its ablations over paired seeds, with CIs and power"),
    "export": ("cipo_jax.train.export", "write a checkpoint in Hugging Face format"),
    "bench": ("cipo_jax.bench", "benchmarks: sample, verify, step"),
    "data": ("cipo_jax.data.cli", "task data tools: train-tokenizer, build-tfds, show"),
    "plan": ("cipo_jax.plan", "per-device memory plan for a config on a chip"),
    "demo": ("cipo_jax.demo", "the small CPU CIPO experiment behind `make demo`"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m cipo_jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        args = parser.parse_args(argv[:1] or ["--help"])
        return 0
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    cmd = argparse.ArgumentParser(prog=f"python -m cipo_jax {name}", description=COMMANDS[name][1])
    module.add_arguments(cmd)
    try:  # lets `key=value` overrides and flags come in any order
        args = cmd.parse_intermixed_args(argv[1:])
    except TypeError:  # parsers with a REMAINDER argument (bench) cannot intermix
        args = cmd.parse_args(argv[1:])
    from cipo_jax.configlib import ConfigError

    try:
        return int(module.main(args) or 0)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:  # bad input (missing file, bad shape, bad task file): one line
        print(f"error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
