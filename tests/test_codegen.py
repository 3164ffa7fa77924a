"""Generated code tasks (cipo_jax.data.codegen): canonical solutions pass their hidden tests in the
sandbox, gutted ones fail, splits never share a problem, and the stdin/stdout verifier kind gives
each failure its status and quotes the failing case."""

from __future__ import annotations

import ast
import json

import pytest

from cipo_jax.data.codegen import FAMILIES, Problem, all_problems, problem_task
from cipo_jax.data.load import load_tasks
from cipo_jax.verifiers.table import VERIFIERS


def _one_per_family(kind: str) -> list:
    return [problem_task(Problem(f, f.values[len(f.values) // 2]), kind, f"t-{f.name}") for f in FAMILIES]


def test_every_canonical_solution_passes_its_tests_on_the_host():
    # All problems, both forms, checked in-process against an independent reading of the tests
    # (the sandbox runs one per family below): the expected values must be what the body returns.
    for problem in all_problems():
        fn = problem_task(problem, "fn", "x")
        namespace: dict = {}
        exec(fn.prompt + fn.response, namespace)  # our own canonical code, not model output
        asserts = fn.reference.splitlines()
        assert 3 <= len(asserts) <= 8 and all(a.startswith("assert ") for a in asserts)
        exec(fn.reference, namespace)
        io = problem_task(problem, "io", "y")
        cases = json.loads(io.reference)
        assert len(cases) == len(asserts)
        for (stdin, expected), line in zip(cases, asserts):  # same inputs and outputs in both forms
            call, want = line[len("assert "):].split(" == ")
            arg = ast.literal_eval(call[call.index("(") + 1:-1])
            assert stdin == (" ".join(map(str, arg)) if isinstance(arg, list) else str(arg)) + "\n"
            assert expected == f"{ast.literal_eval(want)}\n"


@pytest.mark.parametrize("kind", ["fn", "io"])
def test_canonical_passes_and_gutted_fails_in_the_sandbox(kind):
    gutted = "    return None\n" if kind == "fn" else "input()\nprint(0.5)\n"
    gutted_args = set()  # io: the gutted program once per input reader (each run_io runs every case)
    for task, family in zip(_one_per_family(kind), FAMILIES):
        check = VERIFIERS[task.verifier]
        good = check(task.response, task.reference, task.meta)
        assert (good.reward, good.status) == (1.0, "ok"), (task.prompt, good)
        if kind == "io" and family.arg in gutted_args:
            continue
        gutted_args.add(family.arg)
        bad = check(gutted, task.reference, task.meta)
        assert (bad.reward, bad.status) == (0.0, "failed"), (task.prompt, bad)


def test_code_io_statuses_and_feedback_quote_the_failing_case():
    task = problem_task(Problem(FAMILIES[0], 7), "io", "t")  # add_7 over stdin
    check = VERIFIERS["code_io"]
    first_stdin, first_expected = json.loads(task.reference)[0]
    wrong = check("x = int(input())\nprint(x + 6)\n", task.reference, task.meta)
    assert wrong.status == "failed" and "case 0: wrong_answer" in wrong.detail
    assert repr(first_stdin) in wrong.detail and repr(first_expected) in wrong.detail
    assert f"got '{int(first_stdin) + 6}\\n'" in wrong.detail
    crash = check("x = int(input())\nprint(1 // 0)\n", task.reference, task.meta)
    assert crash.status == "error" and "runtime_error" in crash.detail
    slow = check("while True:\n    pass\n", task.reference, {**task.meta, "timeout_s": 1.0})
    assert slow.status == "timeout" and "case 0: timeout" in slow.detail
    hog = check("x = bytearray(1 << 30)\n", task.reference, {**task.meta, "memory_mb": 256})
    assert hog.status == "error" and "case 0: memory" in hog.detail


def test_splits_never_share_a_problem_and_are_deterministic():
    for kind in ("fn", "io"):
        train = {t.prompt for seed in (0, 1) for t in load_tasks(f"codegen:kind={kind}", size=300, seed=seed)}
        test = load_tasks(f"codegen:kind={kind}", size=100, seed=0, split="test")
        assert len({t.prompt for t in test}) == 100  # held out: each problem once
        assert not train & {t.prompt for t in test}
        again = load_tasks(f"codegen:kind={kind}", size=100, seed=0, split="test")
        assert [(t.prompt, t.reference) for t in again] == [(t.prompt, t.reference) for t in test]
    # the two forms pose the same problems in the same order
    fn, io = (load_tasks(f"codegen:kind={k}", size=20, seed=3) for k in ("fn", "io"))
    assert [t.meta["entry_point"] for t in fn] == [t.meta["entry_point"] for t in io]


def test_bad_specs_name_the_problem():
    with pytest.raises(ValueError, match="kind must be one of fn, io"):
        load_tasks("codegen:kind=sql", size=2)
    with pytest.raises(ValueError, match="bad option 'size=3'; known: kind="):
        load_tasks("codegen:size=3", size=2)
    with pytest.raises(ValueError, match="asked for 179 distinct test problems; there are 178 held-out"):
        load_tasks("codegen", size=179, split="test")
    assert len(load_tasks("codegen", size=178, split="test")) == 178


def test_code_io_deadline_covers_every_case():
    # each case has its own limit, so the pool allows num_cases x timeout_s plus the start-up slack
    kind = VERIFIERS["code_io"]
    assert kind.deadline_s({"timeout_s": 2.0, "num_cases": 4}, 5.0) == 8.0 + kind.slack_s
    assert kind.deadline_s(None, 1.0) == 5.0 + kind.slack_s
