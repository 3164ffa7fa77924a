"""Math answers: extract the final answer, check equivalence with math-verify.

`check` runs in the calling process with math-verify's own timers off (they use signal.alarm,
which only works in a main thread); `score("math", ...)` and `VerifierPool` run it in worker
processes, which enforce one wall-clock deadline per item by replacing a worker that overruns.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from functools import lru_cache

from cipo_jax.verifiers.extract import final_answer

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_FRACTION = re.compile(r"(-?)\\[dt]?frac\{([-+]?\d+)\}\{([-+]?\d+)\}|([-+]?\d+)/([-+]?\d+)")


@lru_cache(maxsize=4096)
def _parse(text: str):
    """math-verify's parse (an antlr LaTeX parser, ~5-40 ms). Cached: in RL the G rollouts of a
    prompt share one reference, and many rollouts give the same answer string."""
    from math_verify import parse

    return parse(f"${text}$", parsing_timeout=None)


def _exact_number(text: str) -> Fraction | None:
    """An integer, decimal or plain fraction (`3`, `-0.25`, `\\frac{3}{4}`, `3/4`) as a Fraction."""
    text = text.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+", text) else text
    if _NUMBER.fullmatch(text):
        return Fraction(text)
    match = _FRACTION.fullmatch(text)
    if match is None:
        return None
    sign, num, den = (match[1], match[2], match[3]) if match[2] else ("", match[4], match[5])
    if int(den) == 0:
        return None
    return Fraction(int(num), int(den)) * (-1 if sign else 1)


def _fast_decision(predicted: str, answer: str) -> bool | None:
    """Decide without sympy when it is certain: identical strings, or two exact numbers that are
    equal, or far apart (near misses go to math-verify, which rounds to 6 digits)."""
    a, b = "".join(predicted.split()), "".join(answer.split())
    if a and a == b:
        return True
    x, y = _exact_number(a), _exact_number(b)
    if x is None or y is None:
        return None
    if x == y:
        return True
    if abs(x - y) > Fraction(1, 1000) * max(1, abs(y)):
        return False
    return None


def check(response: str, answer: str, *, boxed: bool = True, answer_phrase: bool = True) -> bool:
    """In-process check: the response's final answer (see `extract.final_answer`) equals
    `answer` by math-verify (fractions, decimals, percent, sets, intervals, algebra)."""
    from math_verify import verify as mv_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns on every untimed call
    predicted = final_answer(response, boxed=boxed, answer_phrase=answer_phrase)
    if predicted is None:
        return False
    fast = _fast_decision(predicted, answer)
    if fast is not None:
        return fast
    gold = _parse(answer.strip())
    if not gold:
        raise ValueError(f"reference answer {answer!r} does not parse")
    target = _parse(predicted)
    return bool(target) and bool(mv_verify(gold, target, timeout_seconds=None))
