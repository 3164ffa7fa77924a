"""The one verifier table: name -> `VerifierKind` (check function, time allowance, warm-up).

Checks run inside pool workers (`pool.py`); the trainer goes through `score` / `VerifierPool`,
which add the per-item deadline and crash isolation. A kind is called like its check function:
`VERIFIERS["exact"](response, reference, meta) -> Verdict`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from cipo_jax.verifiers import code, exact, extract, gym, math

# ok: verified correct (reward > 0); failed: checked and wrong; timeout: deadline passed;
# error: bad input or a verifier exception; crashed: the worker died; killed: sandbox signal.
STATUSES = ("ok", "failed", "timeout", "error", "crashed", "killed")


@dataclass(frozen=True)
class Verdict:
    reward: float
    status: str
    detail: str = ""


class Item(NamedTuple):
    """One thing to score: `VERIFIERS[verifier](response, reference, meta)`."""

    verifier: str
    response: str
    reference: str
    meta: dict[str, Any] | None = None


Check = Callable[[str, str, "dict | None"], Verdict]


@dataclass(frozen=True)
class VerifierKind:
    """check: the in-process verifier. own_limit_s: the time limit the check enforces itself for
    an item (from its meta), if any; the pool then allows that plus `slack_s` (start-up and
    clean-up) when it exceeds the pool's deadline. warm_up: run once per worker before its first
    item, so no item's deadline pays for imports."""

    check: Check
    own_limit_s: Callable[[dict | None], float] | None = None
    slack_s: float = 0.0
    warm_up: Callable[[], None] | None = None

    def __call__(self, response: str, reference: str, meta: dict | None) -> Verdict:
        return self.check(response, reference, meta)

    def deadline_s(self, meta: dict | None, timeout_s: float) -> float:
        """Wall-clock seconds the pool allows one item of this kind."""
        if self.own_limit_s is None:
            return timeout_s
        return max(timeout_s, self.own_limit_s(meta) + self.slack_s)


def _binary(passed: bool) -> Verdict:
    return Verdict(1.0, "ok") if passed else Verdict(0.0, "failed")


def _math(response: str, reference: str, meta: dict | None) -> Verdict:
    return _binary(math.check(response, reference, **(meta or {})))


def _math_warm_up() -> None:
    math.check(r"\boxed{x^2}", "x^2")  # imports and exercises math-verify's parser


def _exact(response: str, reference: str, meta: dict | None) -> Verdict:
    return _binary(exact.check(response, reference))


def _gym(response: str, reference: str, meta: dict | None) -> Verdict:
    reward = gym.check(response, reference, meta)
    return Verdict(reward, "ok" if reward > 0 else "failed")


_CODE_TIMEOUT_S = 5.0  # a code item's own limit when its meta sets none


def _code_limit_s(meta: dict | None) -> float:
    return float((meta or {}).get("timeout_s", _CODE_TIMEOUT_S))


def _code(response: str, reference: str, meta: dict | None) -> Verdict:
    """`response` is the program, `reference` the tests; meta may set timeout_s, memory_mb.

    Completion-style tasks (HumanEval) carry the function header as meta["code_prefix"]: the
    program is that prefix + the completion. A markdown answer counts by its fenced block. An
    answer that defines the entry point itself (a chat answer restating the whole function) counts
    by its definitions (example calls and prints around them dropped, as HumanEval sanitisers do),
    after the prefix when that is a program on its own: it brings the imports and helpers the
    prompt defined, and the answer's definition replaces the prompt's stub."""
    meta = meta or {}
    prefix, entry = meta.get("code_prefix"), meta.get("entry_point")
    answer = extract.fenced_code(response, entry)
    if entry and f"def {entry}(" in answer:
        program = extract.program_definitions(answer)
        if prefix and _parses(prefix):
            program = f"{prefix}\n\n{program}"
    else:
        program = (prefix or "") + answer
    result = code.run_tests(program, reference, timeout_s=_code_limit_s(meta),
                            memory_mb=int(meta.get("memory_mb", 1024)))
    status = "ok" if result.passed else result.status
    return Verdict(float(result.passed), status, result.detail)


def _parses(source: str) -> bool:
    import ast

    try:
        ast.parse(source)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def _code_io_limit_s(meta: dict | None) -> float:
    """Each case has its own limit; meta["num_cases"] (set by the task) bounds the item's total."""
    return _code_limit_s(meta) * int((meta or {}).get("num_cases", 1))


def _code_io(response: str, reference: str, meta: dict | None) -> Verdict:
    """`response` is a stdin/stdout program, `reference` a JSON list of [stdin, expected stdout]
    cases. A failed verdict's detail quotes the first failing case (the execution feedback a
    correction turn may show)."""
    meta = meta or {}
    cases = [tuple(c) for c in json.loads(reference)]
    result = code.run_io(response, cases, timeout_s=_code_limit_s(meta), memory_mb=int(meta.get("memory_mb", 1024)))
    if result.passed:
        return Verdict(1.0, "ok")
    bad = next((i for i, s in enumerate(result.cases) if s != "pass"), None)
    if bad is None:  # bad input: no case ran
        return Verdict(0.0, result.status, result.detail)
    stdin, expected = cases[bad]
    got = result.stdout if result.cases[bad] == "wrong_answer" else result.stderr.strip()[-200:]
    return Verdict(0.0, result.status, f"{result.detail}; input {stdin[:200]!r}, expected "
                                       f"{expected[:200]!r}, got {got[:200]!r}")


VERIFIERS: dict[str, VerifierKind] = {
    "math": VerifierKind(_math, warm_up=_math_warm_up),
    # The sandbox enforces the program's own limit; 3 s covers its start-up and clean-up.
    "code": VerifierKind(_code, own_limit_s=_code_limit_s, slack_s=3.0),
    "code_io": VerifierKind(_code_io, own_limit_s=_code_io_limit_s, slack_s=3.0),
    "gym": VerifierKind(_gym),
    "exact": VerifierKind(_exact),
}


def as_kind(entry: VerifierKind | Check) -> VerifierKind:
    """A table entry as a kind: a bare check function (a test's probe) has no limit or warm-up."""
    return entry if isinstance(entry, VerifierKind) else VerifierKind(entry)


def lookup(name: str, table: dict | None = None) -> VerifierKind:
    table = VERIFIERS if table is None else table
    if name not in table:
        raise ValueError(f"unknown verifier {name!r}; known: {', '.join(sorted(table))}")
    return as_kind(table[name])
