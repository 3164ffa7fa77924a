"""A full disk: the failing write is reported naming its path, and earlier checkpoints stay
intact and restorable. Uses a real 1 MiB tmpfs (needs root and mount; skipped otherwise)."""

import errno
import subprocess
import uuid
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from cipo_jax.train.checkpoint import CheckpointError, Checkpointer, abstract_like
from cipo_jax.train.metrics import MetricsWriter


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _tree(seed: int):
    # ~600 KB of incompressible float32: one checkpoint fits on the 1 MiB disk, two do not.
    return {"w": jnp.asarray(np.random.default_rng(seed).normal(size=(150_000,)), jnp.float32)}


def test_checkpoint_on_full_disk_fails_by_name_and_keeps_the_previous(tiny_disk):
    ckpt = Checkpointer(tiny_disk / "ckpt", keep=3)
    ckpt.save(1, _tree(1), {"step": 1}, force=True)
    ckpt.wait()
    with pytest.raises(CheckpointError, match=f"{tiny_disk / 'ckpt'}.* failed: .*(No space|NO_SPACE|ENOSPC|space)"):
        ckpt.save(2, _tree(2), {"step": 2}, force=True)
        ckpt.wait()
    reader = Checkpointer(tiny_disk / "ckpt", keep=3, async_save=False)
    step, arrays, meta = reader.restore_latest(abstract_like(_tree(0)))
    assert step == 1 and meta == {"step": 1}
    np.testing.assert_array_equal(np.asarray(arrays["w"]), np.asarray(_tree(1)["w"]))
    reader.close()


def test_metrics_write_on_full_disk_names_the_file(tiny_disk):
    (tiny_disk / "filler").write_bytes(b"\0" * (1024 * 1024 - 4096))
    writer = MetricsWriter(tiny_disk, total_steps=1, start_step=0, tensorboard=False, progress=False)
    with pytest.raises(OSError) as e:
        for step in range(1000):
            writer.write(step, {"loss": 0.5, "note": "x" * 200})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(Path(tiny_disk) / "metrics.jsonl")
