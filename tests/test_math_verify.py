"""Math verifier: answer extraction edge cases and math-verify equivalence, through the pool;
a pathological expression returns within its deadline."""

from __future__ import annotations

import time

import pytest

from cipo_jax.verifiers import Item, extract, score, shared_pool
from cipo_jax.verifiers.math import check

HANG = r"\boxed{9^{9^{9^{9^{9}}}}}"  # sympy evaluates the tower and never returns


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\{1, \{2\}\}} and more", r"\{1, \{2\}\}"),
    (r"first \boxed{1} then \boxed{2}", "2"),
    (r"\boxed{\sqrt{\frac{a}{b}}}.", r"\sqrt{\frac{a}{b}}"),
    (r"\fbox{7}", "7"),
    (r"unclosed \boxed{3 and \boxed{4}", "4"),
    ("The answer is 12.", "12"),
    ("...\nAnswer: $x+1$\n", "x+1"),
    ("no answer at all", None),
    (r"\boxed{1", None),
])
def test_final_answer_extraction(text, expected):
    assert extract.final_answer(text) == expected


def test_extraction_options():
    assert extract.final_answer(r"\boxed{1} Answer: 2", boxed=False) == "2"
    assert extract.final_answer("Answer: 2", answer_phrase=False) is None


@pytest.mark.parametrize("response, answer, expected", [
    (r"thus \boxed{\dfrac{1}{2}}", "0.5", True),
    (r"\boxed{0.5}", r"\frac{1}{2}", True),
    (r"\boxed{50\%}", "0.5", True),
    (r"\boxed{\{3, 1, 2\}}", r"\{1,2,3\}", True),
    (r"\boxed{\{1, 2\}}", r"\{1,2,3\}", False),
    (r"\boxed{(0, 1]}", "(0,1]", True),
    (r"\boxed{[0, 1)}", "(0,1]", False),
    (r"\boxed{x^2+2x+1}", "(x+1)^2", True),
    (r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{1}{\sqrt{2}}", True),
    (r"\boxed{1} wait, actually \boxed{2}", "2", True),
    (r"\boxed{2} wait, actually \boxed{1}", "2", False),
    ("The answer is 3.", "3", True),
    ("I think it is 3", "3", False),
])
def test_check_equivalences(response, answer, expected):
    assert check(response, answer) is expected


def _math_batch(responses, answers, timeout_s=None):
    return shared_pool().score_batch([Item("math", r, a) for r, a in zip(responses, answers)],
                                     timeout_s=timeout_s)


def test_math_batch_through_pool_including_edge_cases():
    long_response = "x" * 100_000 + r" \boxed{42}"
    responses = [r"\boxed{\dfrac{1}{2}}", long_response, "no answer", HANG, r"\boxed{50\%}",
                 "{" * 50_000]
    answers = ["0.5", "42", "1", "1", r"\frac{1}{2}", "1"]
    start = time.monotonic()
    verdicts = _math_batch(responses, answers, timeout_s=2.0)
    elapsed = time.monotonic() - start
    assert [v.reward > 0 for v in verdicts] == [True, True, False, False, True, False]
    assert verdicts[3].status == "timeout"
    assert [v.status for v in verdicts[:3]] == ["ok", "ok", "failed"]
    assert elapsed < 2.0 + 8.0  # one deadline plus a worker restart, not math-verify's 2 x 5 s
    assert [v.reward for v in _math_batch(responses[:1], answers[:1])] == [1.0]


def test_single_score_and_pathological_deadline():
    assert score("math", r"\boxed{\dfrac{3}{4}}", "0.75").reward == 1.0
    start = time.monotonic()
    verdict = score("math", HANG, "1", timeout_s=1.0)
    assert (verdict.reward, verdict.status) == (0.0, "timeout")
    assert time.monotonic() - start < 1.0 + 8.0


def test_bad_reference_is_an_error_status_not_an_exception():
    (verdict,) = _math_batch([r"\boxed{1}"], [""])
    assert verdict.status == "error"


def test_exact_number_fast_path_agrees_with_math_verify():
    import random

    from math_verify import parse
    from math_verify import verify as mv_verify

    from cipo_jax.verifiers.math import _fast_decision

    rng = random.Random(0)
    forms = [lambda p, q: str(p), lambda p, q: f"{p}/{q}", lambda p, q: rf"\frac{{{p}}}{{{q}}}",
             lambda p, q: rf"\dfrac{{{p}}}{{{q}}}", lambda p, q: f"{p / q:.4f}".rstrip("0")]
    decided = 0
    for _ in range(150):
        p, q = rng.randint(-30, 30), rng.randint(1, 12)
        p2, q2 = (p, q) if rng.random() < 0.5 else (rng.randint(-30, 30), rng.randint(1, 12))
        a, b = rng.choice(forms)(p, q), rng.choice(forms)(p2, q2)
        fast = _fast_decision(a, b)
        if fast is not None:
            decided += 1
            expected = mv_verify(parse(f"${b}$"), parse(f"${a}$"))
            assert fast == expected, (a, b)
    assert decided > 100
