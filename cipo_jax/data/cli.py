"""`python -m cipo_jax data <subcommand>`: train-tokenizer, build-tfds, show."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="subcommand", required=True)

    def task_options(p):
        p.add_argument("--tasks", required=True, help="task spec, e.g. arith, gym:chain_sum, jsonl:FILE")
        p.add_argument("--size", type=int, default=None, help="number of tasks (generators default to 1000)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--split", default="train")

    p = sub.add_parser("train-tokenizer", help="train a sentencepiece model on a task corpus")
    task_options(p)
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--out", required=True, help="the .model file to write")
    p.add_argument("--template", default=None, help="correction template to cover (default: the config default)")

    p = sub.add_parser("build-tfds", help="write tasks as an array_record tfds dataset (splits train and test)")
    task_options(p)
    p.add_argument("--test-size", type=int, default=0, help="also write this many tasks of split 'test'")
    p.add_argument("--out", required=True, help="data_dir; read back with the spec tfds:<out>")

    p = sub.add_parser("show", help="print tasks, and with --tokenizer their rendered prompts")
    task_options(p)
    p.add_argument("--limit", type=int, default=3)
    p.add_argument("--tokenizer", default="", help="tokenizer spec; prints rendered prompt and its token count")
    p.add_argument("--chat", action="store_true", help="render with the chat template")


def main(args: argparse.Namespace) -> int:
    from cipo_jax.data.load import load_tasks

    tasks = load_tasks(args.tasks, size=args.size, seed=args.seed, split=args.split)
    if args.subcommand == "train-tokenizer":
        from cipo_jax.config import CIPOConfig
        from cipo_jax.data.spm_train import task_corpus, train_sentencepiece
        from cipo_jax.data.tokenizer import load_tokenizer

        template = CIPOConfig().template if args.template is None else args.template
        out = train_sentencepiece(task_corpus(tasks, (template,)), args.vocab_size, args.out)
        print(f"wrote {out}: {load_tokenizer(f'sp:{out}')}")
    elif args.subcommand == "build-tfds":
        from cipo_jax.data.tfds_builder import build_tfds

        splits = {"train": tasks}
        if args.test_size:
            splits["test"] = load_tasks(args.tasks, size=args.test_size, seed=args.seed, split="test")
        path = build_tfds(splits, args.out)
        print(f"wrote {path}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()) + f"; read with tfds:{args.out}")
    else:
        _show(tasks[: args.limit], args.tokenizer, args.chat)
    return 0


def _show(tasks, tokenizer_spec: str, chat: bool) -> None:
    from cipo_jax.data.tasks import to_dict

    tokenizer = None
    if tokenizer_spec:
        from cipo_jax.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_spec)
    for task in tasks:
        print(json.dumps(to_dict(task), ensure_ascii=False)[:2000])
        if tokenizer is not None:
            from cipo_jax.cipo.template import render_prompt

            ids = render_prompt(task, tokenizer, chat=chat)
            print(f"--- rendered ({len(ids)} tokens):\n{tokenizer.decode(ids)}\n---")
