"""Checkpoint integrity: a damaged newest step is detected (not restored as garbage) and restore
falls back to the previous intact one, naming the one it skipped."""

import logging

import jax.numpy as jnp
import numpy as np
import pytest

from cipo_jax.train.checkpoint import CheckpointError, Checkpointer, abstract_like, fingerprint


def _tree(step: int):
    rng = np.random.default_rng(step)
    return {"w": jnp.asarray(rng.normal(size=(64, 96)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(96,)), jnp.bfloat16),
            "n": jnp.asarray(step, jnp.int32)}


def _saved(tmp_path, steps=(1, 2, 3)) -> Checkpointer:
    ckpt = Checkpointer(tmp_path / "ckpt", keep=5, async_save=False)
    for s in steps:
        ckpt.save(s, _tree(s), {"progress": {"step": s}}, force=True)
    ckpt.wait()
    return ckpt


def _data_files(ckpt: Checkpointer, step: int):
    files = [p for p in (ckpt.directory / str(step) / "arrays").rglob("*") if p.is_file() and "/d/" in str(p)]
    return sorted(files, key=lambda p: p.stat().st_size)


def _equal(a, b):
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def test_fingerprint_against_numpy_reference():
    x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    bits = x.reshape(-1).view(np.uint32).astype(np.uint64)
    expected = int((bits * np.arange(1, bits.size + 1, dtype=np.uint64)).sum() % 2**32)
    assert fingerprint({"x": jnp.asarray(x)}) == {"['x']": expected}
    # A swap of two elements (same multiset of values) changes it; a NaN is seen by its bits.
    y = x.copy()
    y[0, 0], y[0, 1] = x[0, 1], x[0, 0]
    assert fingerprint({"x": jnp.asarray(y)}) != fingerprint({"x": jnp.asarray(x)})


def test_restore_latest_intact(tmp_path):
    ckpt = _saved(tmp_path)
    step, arrays, meta = ckpt.restore_latest(abstract_like(_tree(0)))
    assert step == 3 and meta == {"progress": {"step": 3}} and _equal(arrays, _tree(3))
    ckpt.close()


@pytest.mark.parametrize("damage", ["truncate", "flip_bytes", "delete_meta", "garble_meta"])
def test_damaged_newest_falls_back_with_warning(tmp_path, caplog, damage):
    ckpt = _saved(tmp_path)
    newest = ckpt.directory / "3"
    if damage == "truncate":
        big = _data_files(ckpt, 3)[-1]
        big.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    elif damage == "flip_bytes":  # same size, different contents: storage-level corruption
        big = _data_files(ckpt, 3)[-1]
        raw = bytearray(big.read_bytes())
        mid = len(raw) // 2
        raw[mid:mid + 64] = bytes(b ^ 0x5A for b in raw[mid:mid + 64])
        big.write_bytes(bytes(raw))
    elif damage == "delete_meta":
        (newest / "meta" / "metadata").unlink()
    else:
        (newest / "meta" / "metadata").write_text('{"progress": {"st')
    with caplog.at_level(logging.WARNING):
        step, arrays, meta = ckpt.restore_latest(abstract_like(_tree(0)))
    assert step == 2 and meta["progress"]["step"] == 2 and _equal(arrays, _tree(2))
    assert str(newest) in caplog.text and "falling back" in caplog.text
    ckpt.close()


def test_all_damaged_is_an_error_naming_them(tmp_path):
    ckpt = _saved(tmp_path, steps=(1, 2))
    for s in (1, 2):
        (ckpt.directory / str(s) / "meta" / "metadata").write_text("not json")
    with pytest.raises(CheckpointError, match=r"no checkpoint could be restored: .*/2 .*/1 "):
        ckpt.restore_latest(abstract_like(_tree(0)))
    ckpt.close()


def test_shape_mismatch_is_refused(tmp_path):
    """A config change that alters a shape must not silently restore the old arrays."""
    ckpt = _saved(tmp_path, steps=(1,))
    wrong = {**_tree(0), "w": jnp.zeros((64, 48), jnp.float32)}
    with pytest.raises(CheckpointError, match="no checkpoint could be restored"):
        ckpt.restore_latest(abstract_like(wrong))
    ckpt.close()


def test_no_checkpoints_is_none(tmp_path):
    ckpt = Checkpointer(tmp_path / "empty", async_save=False)
    assert ckpt.restore_latest(abstract_like(_tree(0))) is None
    ckpt.close()


def test_fingerprint_of_sharded_replicated_and_single_device_leaves():
    """Shard-wise partial sums (column-sharded, partly replicated, one-device scalar) equal the
    whole-array NumPy reference."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((2, len(jax.devices()) // 2), ("r", "c"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    x = np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32)
    tree = {"cols": jax.device_put(x, NamedSharding(mesh, PartitionSpec(None, "c"))),  # replicated over "r"
            "rows": jax.device_put(x, NamedSharding(mesh, PartitionSpec("r", None))),
            "n": jax.device_put(jnp.int32(3), jax.devices()[0])}
    bits = x.reshape(-1).view(np.uint32).astype(np.uint64)
    expected = int((bits * np.arange(1, bits.size + 1, dtype=np.uint64)).sum() % 2**32)
    assert fingerprint(tree) == {"['cols']": expected, "['rows']": expected, "['n']": 3}


def test_orbax_alone_restores_flipped_bytes_silently(tmp_path):
    """Why the fingerprints exist: without them the damaged step 'restores' fine, with wrong values."""
    ckpt = _saved(tmp_path)
    big = _data_files(ckpt, 3)[-1]
    raw = bytearray(big.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 64] = bytes(b ^ 0x5A for b in raw[mid:mid + 64])
    big.write_bytes(bytes(raw))
    arrays, _ = ckpt.read(3, abstract_like(_tree(0)), verify=False)
    assert not _equal(arrays, _tree(3))
    ckpt.close()
