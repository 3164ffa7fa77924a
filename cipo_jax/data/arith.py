"""Built-in arithmetic tasks for the tiny demo model, verifier "exact".

    prompt   "Q: 37+45-12 ="
    response " 70"                                (cot=False)
    response " 37+45=82 82-12=70 Answer: 70"      (cot=True: one step per operator, left to right)
    reference "70"

Spec: "arith" or "arith:digits=2,operands=3,ops=+-,cot=0,noise=0". Each task draws its own operand count
(2..operands) and digit count (1..digits), so one set mixes easy and hard items: a small model
learns the easy ones during SFT and fails on the harder ones, which leaves prompts of medium pass
rate for RL. Task i of (seed, split) is a pure function of those three values.

Train and test never share an expression, for any seeds: an expression belongs to the test split
iff a hash of its text falls in 1 of TEST_BUCKETS buckets, and each split redraws until its item
falls on its own side.

noise > 0 makes the SFT target (`response`, never the reference) state a final answer off by 1 or 2
with that probability: a stand-in for imperfect demonstrations. The warm-started policy then
often knows the answer but says another one, a problem-independent error that RL against the
verifier can remove (docs/learning.md).

Responses are scored by the "exact" verifier (`cipo_jax.verifiers.exact.final_integer` gives the
answer a text states: the value after the last "Answer:", else the last integer).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, fields

from cipo_jax.data.tasks import Task, first_distinct

TEST_BUCKETS = 8
SPLITS = {"train": False, "test": True, "eval": True}  # split -> is held out
_OPS = "+-*"


@dataclass(frozen=True)
class ArithSpec:
    digits: int = 2  # operands have 1..digits digits
    operands: int = 3  # expressions have 2..operands operands
    ops: str = "+-"  # drawn uniformly per operator; "*" binds like the others (left to right)
    cot: bool = False  # step-by-step response
    noise: float = 0.0  # probability that the SFT response's final answer is off by 1 or 2

    def __post_init__(self):
        if not 1 <= self.digits <= 9:
            raise ValueError(f"arith: digits must be in 1..9, got {self.digits}")
        if not 2 <= self.operands <= 8:
            raise ValueError(f"arith: operands must be in 2..8, got {self.operands}")
        if not self.ops or set(self.ops) - set(_OPS):
            raise ValueError(f"arith: ops must be a non-empty subset of {_OPS!r}, got {self.ops!r}")
        if not 0.0 <= self.noise < 1.0:
            raise ValueError(f"arith: noise must lie in [0, 1), got {self.noise}")


def parse_arith_spec(options: str) -> ArithSpec:
    """"digits=2,operands=3,ops=+-,cot=1" -> ArithSpec; an unknown key names the known ones."""
    known = {f.name: f.type for f in fields(ArithSpec)}
    kwargs = {}
    for item in filter(None, options.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"arith: bad option {item!r}; known: {', '.join(f'{k}=' for k in known)}")
        if key == "ops":
            kwargs[key] = value
        elif key == "cot":
            if value not in ("0", "1", "true", "false"):
                raise ValueError(f"arith: cot must be 0/1, got {value!r}")
            kwargs[key] = value in ("1", "true")
        elif key == "noise":
            try:
                kwargs[key] = float(value)
            except ValueError:
                raise ValueError(f"arith: noise must be a number, got {value!r}") from None
        else:
            try:
                kwargs[key] = int(value)
            except ValueError:
                raise ValueError(f"arith: {key} must be an integer, got {value!r}") from None
    return ArithSpec(**kwargs)


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _draw(rng: random.Random, spec: ArithSpec) -> tuple[list[int], list[str]]:
    n = rng.randint(2, spec.operands)
    numbers = [rng.randint(0, 10 ** rng.randint(1, spec.digits) - 1) for _ in range(n)]
    return numbers, [rng.choice(spec.ops) for _ in range(n - 1)]


def _is_test(expression: str) -> bool:
    return hashlib.sha256(expression.encode()).digest()[0] % TEST_BUCKETS == 0


def arith_task(spec: ArithSpec, seed: int, split: str, index: int) -> Task:
    """Task `index` of the (seed, split) stream."""
    if split not in SPLITS:
        raise ValueError(f"arith: unknown split {split!r}; known: {', '.join(SPLITS)}")
    for attempt in range(10_000):
        # A string seed hashes with SHA-512 inside random.Random: stable across runs and processes.
        # cot only changes the response, so it stays out of the seed: same problems either way.
        rng = random.Random(f"arith:{spec.digits}:{spec.operands}:{spec.ops}:{seed}:{split}:{index}:{attempt}")
        numbers, ops = _draw(rng, spec)
        expression = "".join(f"{x}{op}" for x, op in zip(numbers, ops)) + str(numbers[-1])
        if _is_test(expression) == SPLITS[split]:
            break
    else:  # unreachable in practice: each draw lands on a side with probability >= 1/TEST_BUCKETS
        raise RuntimeError(f"arith: no {split} item found for index {index}")
    value, steps = numbers[0], []
    for op, x in zip(ops, numbers[1:]):
        new = _apply(op, value, x)
        steps.append(f"{value}{op}{x}={new}")
        value = new
    stated = value + rng.choice((-2, -1, 1, 2)) if rng.random() < spec.noise else value
    response = f" {' '.join(steps)} Answer: {stated}" if spec.cot else f" {stated}"
    return Task(
        id=f"arith-{split}-{seed}-{index}",
        prompt=f"Q: {expression} =",
        messages=None,
        reference=str(value),
        verifier="exact",
        meta={"expression": expression, "operands": len(numbers), "digits": max(len(str(x)) for x in numbers)},
        response=response,
    )


def arith_tasks(spec: ArithSpec, size: int, seed: int = 0, split: str = "train") -> list[Task]:
    """Tasks 0.. of the (seed, split) stream. A held-out split keeps only the first occurrence of
    each expression (an evaluation counts distinct problems); training keeps repeats."""
    if not SPLITS.get(split, False):
        return [arith_task(spec, seed, split, i) for i in range(size)]
    tasks = first_distinct(lambda i: arith_task(spec, seed, split, i), size, max_draws=50 * size + 1000)
    if len(tasks) == size:
        return tasks
    raise ValueError(f"arith: only {len(tasks)} distinct {split} problems found for {spec} (asked for {size}); "
                     f"ask for fewer or widen the spec (more digits or operands)")
