"""Tasks as a tensorflow-datasets dataset in array_record files, readable without TensorFlow.

Each example holds the task's position, id and schema dict (`cipo_jax.data.tasks.to_dict`) as
JSON text: the meta dict is free-form, so one JSON feature keeps the schema in one place. tfds
shuffles examples by key hash when writing, so reading sorts by the stored position.

    build_tfds({"train": tasks, "test": held_out}, "data/tfds")
    load_tfds("data/tfds", split="train")   # -> list[Task]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from cipo_jax.data.tasks import Task, task_from_dict, to_dict

NAME = "cipo_tasks"


class CipoTasks(tfds.core.GeneratorBasedBuilder):
    """Builder for our Task records; the tasks to write are handed to the constructor."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Task records as JSON text."}

    def __init__(self, *, splits: dict[str, list[Task]] | None = None, **kwargs):
        self._splits = splits or {}
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        features = tfds.features.FeaturesDict(
            {"index": tfds.features.Scalar(dtype=np.int64), "id": tfds.features.Text(), "task": tfds.features.Text()}
        )
        return self.dataset_info_from_configs(features=features, description=__doc__.splitlines()[0])

    def _split_generators(self, dl_manager):
        return {name: self._generate_examples(tasks) for name, tasks in self._splits.items()}

    def _generate_examples(self, tasks):
        for index, task in enumerate(tasks):
            # Keyed by position: ids may repeat across loaders, positions don't.
            yield index, {"index": index, "id": task.id, "task": json.dumps(to_dict(task), ensure_ascii=False)}


def build_tfds(tasks: list[Task] | dict[str, list[Task]], data_dir: str | Path) -> Path:
    """Write `tasks` (a list for split "train", or split name -> list) under data_dir, replacing
    any earlier build there; returns the dataset's version directory."""
    splits = {"train": tasks} if isinstance(tasks, list) else dict(tasks)
    for name, split_tasks in splits.items():
        if not split_tasks:
            raise ValueError(f"split {name!r} has no tasks")
    builder = CipoTasks(splits=splits, data_dir=str(data_dir), file_format="array_record")
    tfds.disable_progress_bar()
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(download_mode=tfds.download.GenerateMode.FORCE_REDOWNLOAD)
    )
    return Path(builder.data_dir)


def load_tfds(data_dir: str | Path, split: str = "train") -> list[Task]:
    """The tasks of one split, in the order they were written (random access via array_record)."""
    builder = CipoTasks(data_dir=str(data_dir), file_format="array_record")
    if not builder.is_prepared():
        raise FileNotFoundError(f"{data_dir}: no {NAME} dataset here (build one with `python -m cipo_jax data build-tfds`)")
    if split not in builder.info.splits:
        raise ValueError(f"{data_dir}: no split {split!r}; have: {', '.join(builder.info.splits)}")
    source = builder.as_data_source(split=split)
    examples = sorted((source[i] for i in range(len(source))), key=lambda ex: int(ex["index"]))
    return [task_from_dict(json.loads(_text(ex["task"]))) for ex in examples]


def _text(value) -> str:
    # Text features come back as bytes from array_record sources.
    return value.decode("utf-8") if isinstance(value, bytes) else value
