"""Weight I/O without transformers: sharded safetensors, mesh placement, and a one-line
WeightError naming the problem for each kind of bad input."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cipo_jax.config import MeshConfig
from cipo_jax.models import WeightError, init_model, load_gguf, load_hf, save_hf, tiny_config
from cipo_jax.models.safetensors_io import read_safetensors, write_safetensors
from cipo_jax.sharding import make_mesh

CONFIG = tiny_config(vocab_size=64, hidden_size=32, intermediate_size=48, num_heads=4, num_kv_heads=2, head_dim=8, tie_embeddings=False)
TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 64, (4, 6)), jnp.int32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    model = init_model(CONFIG, seed=5)
    save_hf(model, path)
    return path, np.asarray(model(TOKENS))


def copy_with(src, dst, tensors=None, config=None):
    dst.mkdir()
    hf = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps(config(hf) if config else hf))
    weights = read_safetensors(src / "model.safetensors")
    write_safetensors(tensors(dict(weights)) if tensors else weights, dst / "model.safetensors")
    return dst


def test_sharded_index_and_mesh_placement(checkpoint, tmp_path):
    src, expected = checkpoint
    weights = read_safetensors(src / "model.safetensors")
    names = sorted(weights)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in halves.items():
        write_safetensors({n: weights[n] for n in part}, tmp_path / file)
    weight_map = {n: file for file, part in halves.items() for n in part}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    np.testing.assert_array_equal(np.asarray(load_hf(tmp_path)(TOKENS)), expected)

    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    model = load_hf(src, mesh=mesh)
    assert model.layers.up[...].addressable_shards[0].data.shape == (2, 32 // 2, 48 // 2)
    with jax.set_mesh(mesh):
        np.testing.assert_allclose(np.asarray(jax.jit(lambda m, t: m(t))(model, TOKENS)), expected, atol=1e-5, rtol=0)


def test_nonexistent_paths():
    with pytest.raises(WeightError, match="model path does not exist: /no/such/dir"):
        load_hf("/no/such/dir")
    with pytest.raises(WeightError, match="GGUF file does not exist: /no/such.gguf"):
        load_gguf("/no/such.gguf")


def test_no_config(tmp_path):
    with pytest.raises(WeightError, match="no config.json in"):
        load_hf(tmp_path)


def test_missing_config_key(checkpoint, tmp_path):
    path = copy_with(checkpoint[0], tmp_path / "m", config=lambda hf: {k: v for k, v in hf.items() if k != "num_hidden_layers"})
    with pytest.raises(WeightError, match="missing required key 'num_hidden_layers'"):
        load_hf(path)


def test_unknown_model_type(checkpoint, tmp_path):
    path = copy_with(checkpoint[0], tmp_path / "m", config=lambda hf: dict(hf, model_type="mistral_moe"))
    with pytest.raises(WeightError, match="unknown model_type 'mistral_moe'.*supported: llama, qwen2, qwen3"):
        load_hf(path)


def test_missing_tensor(checkpoint, tmp_path):
    drop = "model.layers.1.mlp.up_proj.weight"
    path = copy_with(checkpoint[0], tmp_path / "m", tensors=lambda t: {k: v for k, v in t.items() if k != drop})
    with pytest.raises(WeightError, match=f"missing tensor '{drop}'"):
        load_hf(path)


def test_unexpected_tensor(checkpoint, tmp_path):
    path = copy_with(checkpoint[0], tmp_path / "m", tensors=lambda t: dict(t, **{"model.layers.0.extra.weight": np.zeros(3, np.float32)}))
    with pytest.raises(WeightError, match="unexpected tensor 'model.layers.0.extra.weight'"):
        load_hf(path)


def test_wrong_shape(checkpoint, tmp_path):
    name = "model.layers.0.self_attn.k_proj.weight"
    path = copy_with(checkpoint[0], tmp_path / "m", tensors=lambda t: dict(t, **{name: np.zeros((8, 32), np.float32)}))
    with pytest.raises(WeightError, match=f"tensor '{name}' has shape \\(8, 32\\), expected \\(16, 32\\)"):
        load_hf(path)


@pytest.mark.parametrize("keep", [4, 100, -200])
def test_truncated_safetensors(checkpoint, tmp_path, keep):
    path = copy_with(checkpoint[0], tmp_path / "m")
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[:keep])
    with pytest.raises(WeightError, match="truncated safetensors file") as err:
        load_hf(path)
    assert "\n" not in str(err.value)


def test_truncated_gguf(tmp_path):
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(WeightError, match="cannot read GGUF file"):
        load_gguf(tmp_path / "bad.gguf")
