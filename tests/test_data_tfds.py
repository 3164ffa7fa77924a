"""Tasks through tensorflow-datasets array_record files, with no TensorFlow installed."""

import importlib.util

from cipo_jax.data import Task, load_tasks
from cipo_jax.data.cli import add_arguments, main
from cipo_jax.data.tfds_builder import build_tfds


def test_tensorflow_is_not_installed():
    assert importlib.util.find_spec("tensorflow") is None


def test_build_and_read_round_trip(tmp_path):
    train = load_tasks("arith:cot=1", size=40, seed=1) + [
        Task(id="chat", prompt=None, messages=({"role": "user", "content": "héllo ∑"},), reference="x",
             verifier="math", meta={"nested": {"a": [1, 2.5, None]}}, response=None)
    ]
    test = load_tasks("humaneval", size=3)
    build_tfds({"train": train, "test": test}, tmp_path)
    assert load_tasks(f"tfds:{tmp_path}") == train
    assert load_tasks(f"tfds:{tmp_path}", split="test") == test
    assert load_tasks(f"tfds:{tmp_path}", size=5, seed=2) == load_tasks(f"tfds:{tmp_path}", size=5, seed=2)
    # A rebuild replaces the old dataset.
    build_tfds(train[:3], tmp_path)
    assert load_tasks(f"tfds:{tmp_path}") == train[:3]


def test_missing_dataset_and_split_are_named(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="no cipo_tasks dataset here"):
        load_tasks(f"tfds:{tmp_path}")
    build_tfds(load_tasks("arith", size=2), tmp_path)
    with pytest.raises(ValueError, match="no split 'test'; have: train"):
        load_tasks(f"tfds:{tmp_path}", split="test")


def test_cli_build_tfds(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["build-tfds", "--tasks", "gym:chain_sum", "--size", "6", "--test-size", "2", "--out", str(tmp_path)])
    assert main(args) == 0
    assert load_tasks(f"tfds:{tmp_path}") == load_tasks("gym:chain_sum", size=6)
    assert load_tasks(f"tfds:{tmp_path}", split="test") == load_tasks("gym:chain_sum", size=2, split="test")
    assert "train 6, test 2" in capsys.readouterr().out
