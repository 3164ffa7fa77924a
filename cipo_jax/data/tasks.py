"""The `Task` record: one prompt with what its verifier needs to score an answer.

Every loader returns `Task`s; the sampler sees only `prompt`/`messages`, the verifier table sees
`verifier`, `reference` and `meta`. `to_dict`/`task_from_dict` are the JSONL and tfds schema:

    {"id": str, "prompt": str | "messages": [{"role", "content"}, ...],
     "answer" | "tests": str, "verifier": "math" | "code" | "code_io" | "gym" | "exact",
     "meta": {...}, "response": str | null}

`answer` and `tests` are two spellings of `reference` (tests for code tasks); exactly one of
`prompt`/`messages` is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from cipo_jax.verifiers.table import VERIFIERS

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Task:
    """One task. `reference` is the answer, or the test program for code tasks; `response` is an
    optional reference solution used as the SFT target."""

    id: str
    prompt: str | None
    messages: tuple[dict[str, str], ...] | None
    reference: str
    verifier: str
    meta: dict[str, Any] = field(default_factory=dict)
    response: str | None = None

    def __post_init__(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError(f"task {self.id!r}: give exactly one of prompt / messages")
        if self.messages is not None:
            object.__setattr__(self, "messages", tuple(_check_message(self.id, m) for m in self.messages))
            if not self.messages:
                raise ValueError(f"task {self.id!r}: messages is empty")
        elif not isinstance(self.prompt, str):
            raise ValueError(f"task {self.id!r}: prompt must be a string, got {type(self.prompt).__name__}")
        if self.verifier not in VERIFIERS:
            raise ValueError(f"task {self.id!r}: unknown verifier {self.verifier!r}; known: {', '.join(sorted(VERIFIERS))}")
        if not isinstance(self.reference, str):
            raise ValueError(f"task {self.id!r}: reference must be a string")
        if self.response is not None and not isinstance(self.response, str):
            raise ValueError(f"task {self.id!r}: response must be a string or null")
        try:
            json.dumps(self.meta)
        except TypeError as e:
            raise ValueError(f"task {self.id!r}: meta is not JSON-serialisable ({e})") from None

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


def _check_message(task_id: str, message: Any) -> dict[str, str]:
    if not isinstance(message, dict) or set(message) != {"role", "content"}:
        raise ValueError(f"task {task_id!r}: each message must be {{'role', 'content'}}, got {message!r}")
    if message["role"] not in ROLES or not isinstance(message["content"], str):
        raise ValueError(f"task {task_id!r}: bad message {message!r}; roles are {', '.join(ROLES)}")
    return dict(message)


def to_dict(task: Task) -> dict[str, Any]:
    """The schema form of a task (see the module docstring)."""
    out: dict[str, Any] = {"id": task.id}
    if task.messages is not None:
        out["messages"] = [dict(m) for m in task.messages]
    else:
        out["prompt"] = task.prompt
    out["tests" if task.verifier in ("code", "code_io") else "answer"] = task.reference
    out.update(verifier=task.verifier, meta=task.meta, response=task.response)
    return out


def task_from_dict(d: Any) -> Task:
    """Parse the schema form; raises ValueError naming the problem."""
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    allowed = {"id", "prompt", "messages", "answer", "tests", "verifier", "meta", "response"}
    unknown = set(d) - allowed
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    for key in ("id", "verifier"):
        if key not in d:
            raise ValueError(f"missing field {key!r}")
    if ("answer" in d) == ("tests" in d):
        raise ValueError("give exactly one of 'answer' / 'tests'")
    messages = d.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise ValueError("'messages' must be a list")
    meta = d.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError("'meta' must be an object")
    return Task(
        id=str(d["id"]),
        prompt=d.get("prompt"),
        messages=tuple(messages) if messages is not None else None,
        reference=d["answer"] if "answer" in d else d["tests"],
        verifier=d["verifier"],
        meta=meta,
        response=d.get("response"),
    )


def first_distinct(draw: Callable[[int], Task], size: int, *, max_draws: int) -> list[Task]:
    """The first `size` tasks of draw(0), draw(1), ... with distinct prompts: an evaluation
    counts distinct problems. Fewer when max_draws run out (the caller says why)."""
    tasks, seen = [], set()
    for i in range(max_draws):
        task = draw(i)
        if task.prompt not in seen:
            seen.add(task.prompt)
            tasks.append(task)
            if len(tasks) == size:
                break
    return tasks
