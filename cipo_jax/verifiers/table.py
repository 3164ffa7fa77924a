"""The one verifier table: name -> in-process function (response, reference, meta) -> Verdict.

These run inside pool workers (`pool.py`); the trainer goes through `score` / `VerifierPool`,
which add the per-item deadline and crash isolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from cipo_jax.verifiers import code, exact, gym, math

# ok: verified correct (reward > 0); failed: checked and wrong; timeout: deadline passed;
# error: bad input or a verifier exception; crashed: the worker died; killed: sandbox signal.
STATUSES = ("ok", "failed", "timeout", "error", "crashed", "killed")


@dataclass(frozen=True)
class Verdict:
    reward: float
    status: str
    detail: str = ""


def _binary(passed: bool) -> Verdict:
    return Verdict(1.0, "ok") if passed else Verdict(0.0, "failed")


def _math(response: str, reference: str, meta: dict | None) -> Verdict:
    return _binary(math.check(response, reference, **(meta or {})))


def _exact(response: str, reference: str, meta: dict | None) -> Verdict:
    return _binary(exact.check(response, reference))


def _gym(response: str, reference: str, meta: dict | None) -> Verdict:
    reward = gym.check(response, reference, meta)
    return Verdict(reward, "ok" if reward > 0 else "failed")


def _code(response: str, reference: str, meta: dict | None) -> Verdict:
    """`response` is the program, `reference` the tests; meta may set timeout_s, memory_mb.

    Completion-style tasks (HumanEval) carry the function header as meta["code_prefix"]: the
    program is that prefix + the completion, unless the completion defines the entry point
    itself (a chat answer that restates the whole function)."""
    meta = meta or {}
    program = response
    prefix, entry = meta.get("code_prefix"), meta.get("entry_point")
    if prefix and not (entry and f"def {entry}(" in response):
        program = prefix + response
    result = code.run_tests(program, reference, timeout_s=float(meta.get("timeout_s", 5.0)),
                            memory_mb=int(meta.get("memory_mb", 1024)))
    status = "ok" if result.passed else result.status
    return Verdict(float(result.passed), status, result.detail)


VERIFIERS: dict[str, Callable[[str, str, dict | None], Verdict]] = {
    "math": _math,
    "code": _code,
    "gym": _gym,
    "exact": _exact,
}


def lookup(name: str, table: dict | None = None) -> Callable:
    table = VERIFIERS if table is None else table
    if name not in table:
        raise ValueError(f"unknown verifier {name!r}; known: {', '.join(sorted(table))}")
    return table[name]
