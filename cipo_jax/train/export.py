"""`python -m cipo_jax export --checkpoint RUN_DIR --out DIR`: a run's policy in Hugging Face format."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="run directory (its checkpoints/ are read)")
    parser.add_argument("--out", required=True, help="output directory for config.json + safetensors")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cipo_jax.models import save_hf
    from cipo_jax.train.policy import load_policy

    model, tokenizer, _, _ = load_policy(args.checkpoint, args.step)
    save_hf(model, args.out)
    spec = getattr(tokenizer, "spec", "")
    if spec.startswith("sp:"):  # the tiny models' sentencepiece file travels with the weights
        import shutil

        shutil.copy(spec[3:], Path(args.out) / "tokenizer.model")
    print(f"exported {args.checkpoint} to {args.out}")
    return 0
