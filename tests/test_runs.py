"""Run directories from outside the loop: checkpoint steps come from the Checkpointer (complete
steps only), a read-only Checkpointer creates nothing, and a shared warm start restores in the
other run."""

import numpy as np
import pytest

from cipo_jax.train.checkpoint import Checkpointer, abstract_like
from cipo_jax.train.runs import checkpoint_steps, share_warm_start


def _save(run_dir, steps):
    ckpt = Checkpointer(run_dir / "checkpoints", keep=10, async_save=False)
    for step in steps:
        ckpt.save(step, {"w": np.full((2, 3), float(step), np.float32)}, {"step": step}, force=True)
    ckpt.close()


def test_checkpoint_steps_lists_complete_steps_only(tmp_path):
    assert checkpoint_steps(tmp_path / "none") == []
    _save(tmp_path, [0, 3, 12])
    (tmp_path / "checkpoints" / "15.orbax-checkpoint-tmp-1").mkdir()  # a save in progress
    (tmp_path / "checkpoints" / "notes").mkdir()
    assert checkpoint_steps(tmp_path) == [0, 3, 12]


def test_read_only_checkpointer_creates_nothing(tmp_path):
    ckpt = Checkpointer(tmp_path / "ro", async_save=False, read_only=True)
    assert ckpt.steps() == []
    ckpt.close()
    assert not (tmp_path / "ro").exists()


def test_share_warm_start_restores_in_the_other_run(tmp_path):
    src, dst = tmp_path / "a", tmp_path / "b"
    _save(src, [0, 5])
    (src / "tokenizer.model").write_bytes(b"tok")
    share_warm_start(src, dst)
    assert checkpoint_steps(dst) == [0]
    assert (dst / "tokenizer.model").read_bytes() == b"tok"
    ckpt = Checkpointer(dst / "checkpoints", async_save=False)
    step, arrays, meta = ckpt.restore_latest(abstract_like({"w": np.zeros((2, 3), np.float32)}))
    ckpt.close()
    assert (step, meta["step"]) == (0, 0) and np.all(np.asarray(arrays["w"]) == 0.0)
    _save(src, [7])
    share_warm_start(src, dst)  # dst has checkpoints: left as it is
    assert checkpoint_steps(dst) == [0]
    with pytest.raises(FileNotFoundError, match="no step-0 checkpoint"):
        share_warm_start(dst / "missing", tmp_path / "c")
