"""`run_io`: stdin/stdout programs, one status per case, never raises."""

from __future__ import annotations

import time

import pytest

from cipo_jax.verifiers.code import CASE_STATUSES, normalize_output, run_io

SUM = "a, b = map(int, input().split())\nprint(a + b)\n"
CASES = [("1 2\n", "3\n"), ("10 -4", "6"), ("0 0\n", "0")]


def test_correct_program_passes_every_case():
    result = run_io(SUM, CASES)
    assert (result.passed, result.status, result.cases) == (True, "passed", ["pass"] * 3)


def test_whitespace_normalisation_matches_the_rule():
    program = "import sys\nfor line in sys.stdin:\n    print(line.rstrip() + '   ')\nprint()\nprint()\n"
    assert run_io(program, [("a b\nc\n", "a b\nc")]).passed
    assert not run_io(program, [("a b\nc\n", "a  b\nc")]).passed  # inner spaces still count
    # the same rule, checked against a direct implementation
    for text in ["x \ny\t\n\n", "\n a\n", "", "a\r\nb  \r\n"]:
        expected = "\n".join(l.rstrip() for l in text.splitlines()).rstrip()
        assert normalize_output(text) == expected


def test_main_guard_and_sys_exit_zero_are_normal_endings():
    program = ("import sys\ndef main():\n    print(int(sys.stdin.readline()) * 2)\n    sys.exit(0)\n"
               "if __name__ == '__main__':\n    main()\n")
    assert run_io(program, [("21\n", "42")]).cases == ["pass"]
    assert run_io("print(1)\nraise SystemExit(3)\n", [("", "1")]).cases == ["runtime_error"]


def test_each_case_gets_its_own_status():
    program = ("n = int(input())\n"
               "if n == 1:\n    print(n + 1)\n"
               "elif n == 2:\n    print('wrong')\n"
               "elif n == 3:\n    raise ValueError('boom')\n"
               "elif n == 4:\n    while True:\n        pass\n"
               "else:\n    x = bytearray(8 << 30)\n")
    cases = [(f"{n}\n", f"{n + 1}\n") for n in range(1, 6)]
    start = time.monotonic()
    result = run_io(program, cases, timeout_s=1.0)
    assert result.cases == ["pass", "wrong_answer", "runtime_error", "timeout", "memory"]
    assert set(result.cases) == set(CASE_STATUSES)
    assert (result.passed, result.status) == (False, "failed")  # first failing case: wrong answer
    assert "case 1" in result.detail
    assert time.monotonic() - start < 20


def test_growing_memory_is_memory():
    program = "x = []\nwhile True:\n    x.append(bytearray(1 << 20))\n"
    result = run_io(program, [("", "")], memory_mb=256, timeout_s=10)
    assert result.cases == ["memory"] and result.status == "error"


def test_crash_timeout_statuses_and_output_kept():
    crash = run_io("print('partial')\n1 / 0\n", [("", "partial")])
    assert crash.cases == ["runtime_error"] and "ZeroDivisionError" in crash.detail
    assert "partial" in crash.stdout
    sleeper = run_io("import time\ntime.sleep(30)\n", [("", "")], timeout_s=1.0)
    assert (sleeper.cases, sleeper.status) == (["timeout"], "timeout")
    assert run_io("def f(:\n", [("", "")]).cases == ["runtime_error"]  # does not compile


def test_forged_output_on_a_crash_is_not_a_pass():
    # The right output, then an exit that skips the harness: not a normal ending.
    program = SUM + "import os, sys\nsys.stdout.flush()\nos._exit(0)\n"
    assert run_io(program, CASES[:1]).cases == ["runtime_error"]


@pytest.mark.parametrize("cases", [None, [], "1 2", [("1",)], [(1, "2")], [("a", "b", "c")]])
def test_bad_input_is_an_error_result_not_an_exception(cases):
    result = run_io(SUM, cases)
    assert (result.passed, result.status) == (False, "error") and "case" in result.detail
    assert run_io(None, CASES).status == "error"  # type: ignore[arg-type]
