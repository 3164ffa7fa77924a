"""reasoning-gym tasks, scored by the dataset's own `score_answer`.

The answer is the last `<answer>...</answer>` in the response, else the "Answer:" line, else the
last non-empty line. `meta` names the task (`{"task": "basic_arithmetic"}`) and may carry the full
dataset entry (`"entry"`) or just its `"metadata"`; without an entry one is built from
`reference`.
"""

from __future__ import annotations

from functools import lru_cache

from cipo_jax.verifiers.extract import answer_line, last_line, last_tag


def extract(response: str) -> str | None:
    return last_tag(response) or answer_line(response) or last_line(response)


@lru_cache(maxsize=None)
def _scorer(task: str):
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(task)


def check(response: str, reference: str, meta: dict | None) -> float:
    """Score in [0, 1] from reasoning-gym for the extracted answer."""
    if not meta or "task" not in meta:
        raise ValueError("gym verifier needs meta={'task': <reasoning-gym dataset name>, ...}")
    entry = meta.get("entry") or {"question": "", "answer": reference,
                                  "metadata": meta.get("metadata", {})}
    answer = extract(response)
    return float(_scorer(meta["task"])(answer, entry)) if answer is not None else 0.0
