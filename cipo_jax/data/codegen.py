"""Generated programming tasks with hidden tests, run in the code sandbox.

Two forms of the same problems:

    kind=fn  HumanEval form, verifier "code": prompt = signature + docstring, response = body,
             reference = 3-8 asserts on the entry point.
                 prompt    the signature 'def add_7(x):' and the docstring "Return x plus 7."
                 response  '    return x + 7\\n'
                 reference 'assert add_7(3) == 10\\nassert add_7(-4) == 3\\n...'
    kind=io  LiveCodeBench form, verifier "code_io": the program reads stdin and prints;
             reference = JSON list of 3-8 (stdin, expected stdout) cases.
                 prompt    '# Read an integer x from standard input and print x plus 7.\\n'
                 response  'x = int(input())\\nprint(x + 7)\\n'

A problem is a family (add, count, repeat, ...) and a parameter; each family is one Python
expression, so the canonical solution and the expected outputs come from the same text (the
expected values are computed by evaluating our own expression on the host, never model output).
Spec: "codegen" or "codegen:kind=fn|io". Task i of (seed, split) is a pure function of those three
values; a problem's test inputs depend on the problem only.

Train and test never share a problem: a problem belongs to the test split iff a hash of its
prompt's fn form falls in 1 of TEST_BUCKETS buckets (the same problem in both forms lands on the
same side). A held-out split keeps each problem once.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from dataclasses import dataclass

from cipo_jax.data.tasks import Task, first_distinct

TEST_BUCKETS = 4
SPLITS = {"train": False, "test": True, "eval": True}  # split -> is held out
KINDS = ("fn", "io")


@dataclass(frozen=True)
class Family:
    """name/phrase/expr are templates over the parameter {k}; arg is "x" (int), "xs" (list of
    ints) or "s" (str); values are the parameters; pool draws the inputs' items (ints or letters)."""

    name: str
    phrase: str  # "x plus {k}": the docstring is "Return <phrase>."
    expr: str  # "x + {k}": the canonical solution returns it
    arg: str
    values: tuple
    pool: tuple = tuple(range(-20, 100))


_LETTERS = tuple(string.ascii_lowercase)
_SMALL = tuple(range(10))
FAMILIES = (
    Family("add_{k}", "x plus {k}", "x + {k}", "x", tuple(range(1, 200))),
    Family("subtract_{k}", "x minus {k}", "x - {k}", "x", tuple(range(1, 200))),
    Family("times_{k}", "x times {k}", "x * {k}", "x", tuple(range(2, 30))),
    Family("mod_{k}", "x modulo {k}", "x % {k}", "x", tuple(range(2, 30))),
    Family("is_above_{k}", "True if x is greater than {k}, else False", "x > {k}", "x", tuple(range(0, 60))),
    Family("sum_plus_{k}", "the sum of the numbers in xs plus {k}", "sum(xs) + {k}", "xs", tuple(range(1, 40))),
    Family("max_plus_{k}", "the largest number in xs plus {k}", "max(xs) + {k}", "xs", tuple(range(1, 40))),
    Family("count_{k}", "how many times {k} occurs in xs", "xs.count({k})", "xs", _SMALL, _SMALL),
    Family("first_{k}", "the first {k} numbers of xs", "xs[:{k}]", "xs", tuple(range(1, 6)), _SMALL),
    Family("add_each_{k}", "xs with {k} added to every number", "[v + {k} for v in xs]", "xs",
           tuple(range(1, 40)), _SMALL),
    Family("above_{k}", "the numbers of xs that are greater than {k}", "[v for v in xs if v > {k}]", "xs",
           tuple(range(0, 20)), tuple(range(20))),
    Family("repeat_{k}", "s repeated {k} times", "s * {k}", "s", tuple(range(2, 6)), _LETTERS),
    Family("append_{k}", "s followed by the letter {k}", "s + '{k}'", "s", _LETTERS, _LETTERS),
    Family("count_letter_{k}", "the number of times the letter {k} occurs in s", "s.count('{k}')", "s",
           tuple("abcde"), tuple("abcde")),
)
_READ = {"x": "x = int(input())", "xs": "xs = [int(v) for v in input().split()]", "s": "s = input()"}
_DESCRIBE = {"x": "an integer x", "xs": "a line of space-separated integers xs", "s": "a string s"}


@dataclass(frozen=True)
class CodegenSpec:
    kind: str = "fn"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"codegen: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


def parse_codegen_spec(options: str) -> CodegenSpec:
    """"kind=io" -> CodegenSpec; an unknown key names the known ones."""
    kwargs = {}
    for item in filter(None, options.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key != "kind":
            raise ValueError(f"codegen: bad option {item!r}; known: kind=")
        kwargs[key] = value
    return CodegenSpec(**kwargs)


@dataclass(frozen=True)
class Problem:
    family: Family
    k: object

    @property
    def entry_point(self) -> str:
        return self.family.name.format(k=self.k)

    @property
    def expr(self) -> str:
        return self.family.expr.format(k=self.k)

    @property
    def phrase(self) -> str:
        return self.family.phrase.format(k=self.k)

    def fn_prompt(self) -> str:
        return f'def {self.entry_point}({self.family.arg}):\n    """Return {self.phrase}."""\n'

    def io_prompt(self) -> str:
        return f"# Read {_DESCRIBE[self.family.arg]} from standard input and print {self.phrase}.\n"

    def solve(self, value):
        """The expected output: our own expression evaluated on the host (never model text)."""
        return eval(f"lambda {self.family.arg}: {self.expr}")(value)  # noqa: S307

    def inputs(self) -> list:
        """3-8 test inputs, a function of the problem only."""
        rng = random.Random(f"codegen-inputs:{self.entry_point}")
        pool, arg = self.family.pool, self.family.arg
        draw = {"x": lambda: rng.choice(pool),
                "xs": lambda: [rng.choice(pool) for _ in range(rng.randint(1, 6))],
                "s": lambda: "".join(rng.choice(pool) for _ in range(rng.randint(1, 6)))}[arg]
        return [draw() for _ in range(rng.randint(3, 8))]


def _is_test(problem: Problem) -> bool:
    return hashlib.sha256(problem.fn_prompt().encode()).digest()[0] % TEST_BUCKETS == 0


def _stdin(value) -> str:
    return " ".join(map(str, value)) + "\n" if isinstance(value, list) else f"{value}\n"


def problem_task(problem: Problem, kind: str, task_id: str) -> Task:
    inputs = problem.inputs()
    name = problem.entry_point
    meta = {"family": problem.family.name, "entry_point": name}
    if kind == "fn":
        tests = "".join(f"assert {name}({v!r}) == {problem.solve(v)!r}\n" for v in inputs)
        return Task(id=task_id, prompt=problem.fn_prompt(), messages=None, reference=tests, verifier="code",
                    meta={**meta, "code_prefix": problem.fn_prompt()}, response=f"    return {problem.expr}\n")
    cases = [(_stdin(v), f"{problem.solve(v)}\n") for v in inputs]
    return Task(id=task_id, prompt=problem.io_prompt(), messages=None, reference=json.dumps(cases),
                verifier="code_io", meta={**meta, "num_cases": len(cases)},
                response=f"{_READ[problem.family.arg]}\nprint({problem.expr})\n")


def codegen_task(spec: CodegenSpec, seed: int, split: str, index: int) -> Task:
    """Task `index` of the (seed, split) stream."""
    if split not in SPLITS:
        raise ValueError(f"codegen: unknown split {split!r}; known: {', '.join(SPLITS)}")
    for attempt in range(10_000):
        # kind stays out of the seed: fn and io streams pose the same problems
        rng = random.Random(f"codegen:{seed}:{split}:{index}:{attempt}")
        family = rng.choice(FAMILIES)
        problem = Problem(family, rng.choice(family.values))
        if _is_test(problem) == SPLITS[split]:
            return problem_task(problem, spec.kind, f"codegen-{spec.kind}-{split}-{seed}-{index}")
    raise RuntimeError(f"codegen: no {split} item found for index {index}")  # p < (3/4)^10000


def all_problems() -> list[Problem]:
    return [Problem(f, k) for f in FAMILIES for k in f.values]


def codegen_tasks(spec: CodegenSpec, size: int, seed: int = 0, split: str = "train") -> list[Task]:
    """Tasks 0.. of the (seed, split) stream; a held-out split keeps each problem once."""
    if not SPLITS.get(split, False):
        return [codegen_task(spec, seed, split, i) for i in range(size)]
    available = sum(map(_is_test, all_problems()))
    if size > available:
        raise ValueError(f"codegen: asked for {size} distinct {split} problems; there are {available} held-out "
                         f"problems in all")
    tasks = first_distinct(lambda i: codegen_task(spec, seed, split, i), size, max_draws=50 * size + 1000)
    if len(tasks) == size:
        return tasks
    raise RuntimeError(f"codegen: only {len(tasks)} of {size} distinct {split} problems drawn")  # p ~ 0
