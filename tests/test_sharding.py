"""Mesh construction, the logical->mesh rules, and sharded forwards equal to one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from cipo_jax.config import MeshConfig
from cipo_jax.models import init_model, tiny_config
from cipo_jax.sharding import logical_to_mesh, make_mesh, shard_model, sharded_forward

TOKENS = np.random.default_rng(0).integers(0, 512, (8, 12)).astype(np.int32)


def test_make_mesh_shapes_and_errors():
    assert len(jax.devices()) == 8
    assert dict(make_mesh(MeshConfig(data=2, fsdp=-1, tensor=2)).shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert dict(make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1]).shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    with pytest.raises(ValueError, match="does not divide 8 devices"):
        make_mesh(MeshConfig(data=3, fsdp=-1, tensor=1))
    with pytest.raises(ValueError, match="needs 4 devices, have 8"):
        make_mesh(MeshConfig(data=2, fsdp=2, tensor=1))
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        make_mesh(MeshConfig(data=-1, fsdp=-1, tensor=1))


def test_logical_rules_fall_back_to_replication():
    mesh = {"data": 2, "fsdp": 2, "tensor": 2}
    assert logical_to_mesh(("layers", "embed", "heads", "head_dim"), (2, 64, 4, 16), mesh) == P(None, "fsdp", "tensor", None)
    # SmolLM2: 9 heads, 3 kv heads do not divide tensor=2 -> that dim is replicated.
    assert logical_to_mesh(("layers", "embed", "heads", "head_dim"), (30, 576, 9, 64), mesh) == P(None, "fsdp", None, None)
    assert logical_to_mesh(("act_batch", "act_len"), (8, 5), mesh) == P(("data", "fsdp"), None)
    assert logical_to_mesh(("act_batch", "act_len"), (6, 5), mesh) == P("data", None)  # 6 % 4 != 0, 6 % 2 == 0
    with pytest.raises(ValueError, match="unknown logical axis 'bogus'"):
        logical_to_mesh(("bogus",), (4,), mesh)


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 4, 2)])
@pytest.mark.parametrize("heads", [(4, 2), (6, 3)], ids=["divisible", "indivisible_heads"])
def test_sharded_forward_equals_single_device(shape, heads):
    config = tiny_config(num_heads=heads[0], num_kv_heads=heads[1], tie_embeddings=False)
    expected = np.asarray(init_model(config, seed=3)(jnp.asarray(TOKENS)))
    mesh = make_mesh(MeshConfig(*shape))
    model = shard_model(init_model(config, seed=3), mesh)
    logits = sharded_forward(model, mesh)(TOKENS)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5, rtol=0)
    data, fsdp, tensor = shape
    assert logits.sharding.spec[0] in (("data", "fsdp"), "data", "fsdp")  # batch stays split
    # Parameters are really split: each device holds 1/fsdp of the embed dim, 1/tensor of the mlp dim.
    gate = model.layers.gate[...]
    assert gate.sharding.spec == P(None, "fsdp" if fsdp > 1 else None, "tensor" if tensor > 1 else None)
    assert gate.addressable_shards[0].data.shape == (2, 128 // fsdp, 384 // tensor)
    head_split = tensor if heads[0] % tensor == 0 else 1
    assert model.layers.q[...].addressable_shards[0].data.shape == (2, 128 // fsdp, heads[0] // head_split, 32)
    assert model.lm_head[...].addressable_shards[0].data.shape == (128 // fsdp, 512 // tensor)
