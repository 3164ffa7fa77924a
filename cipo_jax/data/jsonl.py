"""Tasks as JSON Lines: one object per line in the schema of `cipo_jax.data.tasks`."""

from __future__ import annotations

import json
from pathlib import Path

from cipo_jax.data.tasks import Task, task_from_dict, to_dict


def read_jsonl(path: str | Path) -> list[Task]:
    """Every task in the file; a bad line is an error naming the file and line number. Blank
    lines are skipped; a file with no tasks is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such task file")
    tasks = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                tasks.append(task_from_dict(json.loads(line)))
            except (json.JSONDecodeError, ValueError) as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
    if not tasks:
        raise ValueError(f"{path}: no tasks (the file is empty)")
    return tasks


def write_jsonl(tasks: list[Task], path: str | Path) -> None:
    with Path(path).open("w", encoding="utf-8") as f:
        for task in tasks:
            f.write(json.dumps(to_dict(task), ensure_ascii=False) + "\n")
