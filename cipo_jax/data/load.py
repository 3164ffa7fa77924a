"""`load_tasks(spec)`: the one entry point from a task spec string to a list of `Task`s.

    jsonl:<path>       JSON Lines in the schema of cipo_jax.data.tasks
    tfds:<data_dir>    an array_record dataset written by build_tfds (split = its split name)
    gym:<name>         a reasoning-gym generator; the test split uses another seed stream
    humaneval          HumanEval, 164 problems (verifier "code")
    champ              CHAMP, 270 competition-math problems (verifier "math")
    arith[:options]    the built-in arithmetic generator, e.g. "arith:digits=3,cot=1"
    codegen[:options]  generated code tasks with hidden tests: "codegen:kind=fn" (HumanEval form)
                       or "codegen:kind=io" (stdin/stdout)

Generators (gym, arith, codegen) make `size` tasks (default 1000) for (seed, split). Fixed sets (jsonl,
humaneval, champ) have one set of tasks and ignore split; with `size` they return a subset
chosen by seed. tfds reads the named split, subset the same way.
"""

from __future__ import annotations

import random

from cipo_jax.data.tasks import Task

KNOWN_SPECS = ("jsonl:<path>", "tfds:<data_dir>", "gym:<name>", "humaneval", "champ", "arith[:options]",
               "codegen[:kind=fn|io]")
DEFAULT_GENERATED = 1000


def load_tasks(spec: str, *, size: int | None = None, seed: int = 0, split: str = "train") -> list[Task]:
    kind, _, arg = spec.partition(":")
    if size is not None and size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if kind == "arith":
        from cipo_jax.data.arith import arith_tasks, parse_arith_spec

        return arith_tasks(parse_arith_spec(arg), size or DEFAULT_GENERATED, seed, split)
    if kind == "codegen":
        from cipo_jax.data.codegen import codegen_tasks, parse_codegen_spec

        return codegen_tasks(parse_codegen_spec(arg), size or DEFAULT_GENERATED, seed, split)
    if kind == "gym":
        from cipo_jax.data.gym import gym_tasks

        if not arg:
            raise ValueError("gym: give a generator name, e.g. gym:basic_arithmetic")
        return gym_tasks(arg, size or DEFAULT_GENERATED, seed, split)
    if kind == "jsonl" and arg:
        from cipo_jax.data.jsonl import read_jsonl

        tasks = read_jsonl(arg)
    elif kind == "tfds" and arg:
        from cipo_jax.data.tfds_builder import load_tfds

        tasks = load_tfds(arg, split)
    elif spec == "humaneval":
        from cipo_jax.data.benchmarks import humaneval_tasks

        tasks = humaneval_tasks()
    elif spec == "champ":
        from cipo_jax.data.benchmarks import champ_tasks

        tasks = champ_tasks()
    else:
        raise ValueError(f"unknown task spec {spec!r}; known: {', '.join(KNOWN_SPECS)}")
    return _subset(tasks, size, seed)


def _subset(tasks: list[Task], size: int | None, seed: int) -> list[Task]:
    if size is None or size >= len(tasks):
        return tasks
    return [tasks[i] for i in sorted(random.Random(seed).sample(range(len(tasks)), size))]
