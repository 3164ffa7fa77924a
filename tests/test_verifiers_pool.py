"""VerifierPool, the verifier table and the gym / exact verifiers."""

from __future__ import annotations

import os
import time
from functools import partial

import pytest

from cipo_jax.verifiers import VERIFIERS, Item, Verdict, VerifierKind, VerifierPool, score
from cipo_jax.verifiers.table import lookup


def _crash(response, reference, meta):
    if response == "crash":
        os._exit(3)
    if response == "hang":
        time.sleep(60)
    if response == "garbage":
        return "not a verdict"
    if response == "raise":
        raise RuntimeError("boom")
    return Verdict(1.0, "ok")


TABLE = {"probe": _crash}


def test_table_names_and_unknown_name():
    assert {"code", "exact", "gym", "math"} <= set(VERIFIERS)
    assert all(isinstance(kind, VerifierKind) for kind in VERIFIERS.values())
    with pytest.raises(ValueError, match="known: " + ", ".join(sorted(VERIFIERS))):
        lookup("maths")
    with pytest.raises(ValueError, match="unknown verifier"):
        score("nope", "", "")


def test_pool_survives_crash_hang_garbage_and_exceptions():
    items = [("probe", r, "", None) for r in
             ["ok", "crash", "ok", "hang", "garbage", "raise", "ok", "crash", "ok"]]
    with VerifierPool(workers=2, timeout_s=1.5, table=TABLE) as pool:
        start = time.monotonic()
        verdicts = pool.score_batch(items)
        assert time.monotonic() - start < 20
        assert [v.status for v in verdicts] == ["ok", "crashed", "ok", "timeout", "error", "error",
                                               "ok", "crashed", "ok"]
        assert [v.reward for v in verdicts] == [1.0, 0, 1.0, 0, 0, 0, 1.0, 0, 1.0]
        # Replaced workers keep serving.
        assert [v.status for v in pool.score_batch(items[:1] * 4)] == ["ok"] * 4
    with pytest.raises(RuntimeError, match="closed"):
        pool.score_batch(items)


def _sleep(response, reference, meta):
    time.sleep(float(response))
    return Verdict(1.0, "ok")


def test_kind_records_set_deadline_and_warm_up(tmp_path):
    """A kind's own time limit plus its slack extends the pool's deadline; a bare check function
    gets the pool's; each kind's warm-up runs in every worker before the deadlines start."""
    marker = tmp_path / "warm"
    warm = VerifierKind(_sleep, own_limit_s=_meta_limit, slack_s=0.5,
                        warm_up=partial(_touch_and_sleep, str(marker)))
    table = {"bare": _sleep, "limited": warm}
    items = [Item("bare", "1.5", ""), Item("limited", "1.5", "", {"limit": 1.5}),
             Item("limited", "3", "", {"limit": 0.5})]
    with VerifierPool(workers=1, timeout_s=0.5, table=table) as pool:
        verdicts = pool.score_batch(items)
    assert [v.status for v in verdicts] == ["timeout", "ok", "timeout"]
    assert marker.exists()
    assert VERIFIERS["code"].deadline_s({"timeout_s": 10}, 5.0) == 10 + VERIFIERS["code"].slack_s
    assert VERIFIERS["math"].deadline_s(None, 5.0) == 5.0


def _meta_limit(meta):
    return meta["limit"]


def _touch_and_sleep(path: str) -> None:
    open(path, "w").close()
    time.sleep(1.0)  # longer than the pool's deadline: it must not count against the first item


def test_mixed_real_verifiers_in_one_batch():
    from reasoning_gym import create_dataset

    entry = create_dataset("basic_arithmetic", size=1, seed=3)[0]
    items = [
        ("math", r"\boxed{\dfrac{1}{4}}", "0.25", None),
        ("exact", "12 + 30 = 42.\nAnswer: 42", "42", None),
        ("exact", "It is 41", "42", None),
        ("exact", "anything", "forty-two", None),
        ("gym", f"<answer>{entry['answer']}</answer>", entry["answer"],
         {"task": "basic_arithmetic", "entry": entry}),
        ("gym", "Answer: 123456789", entry["answer"], {"task": "basic_arithmetic"}),
        ("gym", "x", "1", None),
        ("code", "def f():\n    return 1\n", "assert f() == 1", {"timeout_s": 2}),
        ("code", "def f():\n    return 2\n", "assert f() == 1", None),
        ("code", "while True: pass", "", {"timeout_s": 1}),
    ]
    with VerifierPool(workers=2, timeout_s=5.0) as pool:
        verdicts = pool.score_batch(items)
    assert [v.status for v in verdicts] == ["ok", "ok", "failed", "error", "ok", "failed", "error",
                                           "ok", "failed", "timeout"]
    assert [v.reward for v in verdicts] == [1, 1, 0, 0, 1, 0, 0, 1, 0, 0]


def test_gym_and_exact_in_process():
    from cipo_jax.verifiers import exact, gym

    assert gym.extract("work\n<answer> 7 </answer>\nmore <answer>8</answer>") == "8"
    assert gym.extract("Answer: 5\n") == "5"
    assert gym.extract("lines\n  last one  \n") == "last one"
    assert exact.check("The total is 1,234.", "1234")
    assert exact.check("Answer: -3 (after 10 steps)", "-3")
    assert not exact.check("no number", "3")


def test_malformed_items():
    with VerifierPool(workers=1, timeout_s=2.0, table=TABLE) as pool:
        with pytest.raises(ValueError, match="an item is"):
            pool.score_batch([("probe", "ok")])
        verdicts = pool.score_batch([("probe", "ok", "", {"f": lambda: 0}), ("probe", None, 1, None)])
        assert [v.status for v in verdicts] == ["error", "ok"]


def test_code_verifier_completes_humaneval_prefix():
    from cipo_jax.data.load import load_tasks
    from cipo_jax.verifiers import score

    task = load_tasks("humaneval")[0]
    body = task.response  # the canonical body only: the verifier must prepend the header
    assert score("code", body, task.reference, task.meta).reward == 1.0
    assert score("code", "    return None\n", task.reference, task.meta).reward == 0.0
    full = task.meta["code_prefix"] + body  # a full function, as a chat answer gives it
    assert score("code", full, task.reference, task.meta).reward == 1.0
