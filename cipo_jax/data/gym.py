"""reasoning-gym procedural tasks, scored by the generator's own `score_answer`.

meta = {"task": name, "entry": entry}, the entry made JSON-plain (its metadata holds tuples,
which become lists); the gym verifier (cipo_jax/verifiers/gym.py) calls
`reasoning_gym.get_score_answer_fn(meta["task"])(answer, meta["entry"])`.
"""

from __future__ import annotations

import json

from cipo_jax.data.tasks import Task

# The held-out split is drawn from another seed stream: procedural, so it overlaps the train split
# only where the generator repeats an item by chance.
TEST_SEED_OFFSET = 1_000_003
SPLITS = ("train", "test", "eval")


def gym_tasks(name: str, size: int, seed: int = 0, split: str = "train") -> list[Task]:
    import reasoning_gym

    if split not in SPLITS:
        raise ValueError(f"gym: unknown split {split!r}; known: {', '.join(SPLITS)}")
    stream_seed = seed if split == "train" else seed + TEST_SEED_OFFSET
    try:
        dataset = reasoning_gym.create_dataset(name, seed=stream_seed, size=size)
    except ValueError as e:
        raise ValueError(f"gym: {e}") from None
    tasks = []
    for index in range(size):
        entry = json.loads(json.dumps(dataset[index]))
        tasks.append(
            Task(
                id=f"gym-{name}-{split}-{seed}-{index}",
                prompt=entry["question"],
                messages=None,
                reference=str(entry["answer"]),
                verifier="gym",
                meta={"task": name, "entry": entry},
                response=str(entry["answer"]),
            )
        )
    return tasks
