"""The decoder's interface contract: cached decoding with left padding equals the plain
forward, remat and dtype policies, and the config readers' errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cipo_jax.models import DecoderConfig, KVCache, WeightError, init_model, tiny_config
from cipo_jax.models.decoder import MATMUL_WEIGHTS
from cipo_jax.models.layers import matmul


@pytest.fixture(scope="module")
def model():
    return init_model(tiny_config(num_layers=3, tie_embeddings=False), seed=1)


def test_plain_forward_contract(model):
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 512, (3, 7)), jnp.int32)
    logits = model(tokens)
    assert logits.shape == (3, 7, 512) and logits.dtype == jnp.float32
    # Causal: changing a later token leaves earlier logits unchanged.
    np.testing.assert_array_equal(model(tokens.at[:, 5].set(0))[:, :5], logits[:, :5])


def test_cached_decode_with_left_padding_equals_plain_forward(model):
    """Prefill left-padded prompts, then decode one token at a time through the cache; each
    row's logits must equal the plain forward of its unpadded sequence."""
    rng = np.random.default_rng(0)
    prompt_lens, total, width = [5, 2, 3], 9, 5  # width = padded prompt length
    rows = [rng.integers(0, 512, n + total - 5).tolist() for n in prompt_lens]
    b, slots = len(rows), width + total - 5
    tokens = np.zeros((b, slots), np.int32)
    real = np.zeros((b, slots), bool)
    positions = np.zeros((b, slots), np.int32)
    for i, (row, n) in enumerate(zip(rows, prompt_lens)):
        pad = width - n
        tokens[i, pad:] = row
        real[i, pad:] = True
        positions[i, pad:] = np.arange(len(row))
    step = jax.jit(lambda m, t, p, c, idx, mask: m(t, positions=p, cache=c, cache_index=idx, kv_mask=mask))
    cache = model.init_cache(b, slots + 3)  # spare slots stay masked out
    kv_mask = np.zeros((b, slots + 3), bool)
    kv_mask[:, :width] = real[:, :width]
    logits, cache = step(model, tokens[:, :width], positions[:, :width], cache, 0, kv_mask)
    assert isinstance(cache, KVCache) and [k.shape for k in cache.k] == [(b, 2, slots + 3, 32)] * 3
    outputs = [np.asarray(logits)]
    for t in range(width, slots):
        kv_mask[:, t] = True
        logits, cache = step(model, tokens[:, t : t + 1], positions[:, t : t + 1], cache, jnp.int32(t), kv_mask)
        outputs.append(np.asarray(logits))
    cached = np.concatenate(outputs, axis=1)
    for i, row in enumerate(rows):
        plain = np.asarray(model(jnp.asarray([row], jnp.int32)))[0]
        np.testing.assert_allclose(cached[i][real[i]], plain, atol=1e-4, rtol=0)


def test_logits_at_and_separate_layer_weights_match_the_full_forward(model):
    """logits_at gathers positions of the full logits; per-layer weight copies (the sampler's CPU
    path) give the same cached forward as slices of the stacked weights."""
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, 512, (2, 6)), jnp.int32)
    full = np.asarray(model(tokens))
    at = jnp.asarray([[5, 0], [2, 2]], jnp.int32)
    np.testing.assert_allclose(model(tokens, logits_at=at), full[[[0], [1]], np.asarray(at)], atol=1e-5, rtol=0)
    positions, mask = jnp.broadcast_to(jnp.arange(6), (2, 6)), jnp.ones((2, 8), bool)
    args = dict(positions=positions, cache=model.init_cache(2, 8), cache_index=0, kv_mask=mask)
    sliced, cache = model(tokens, **args)
    copied, cache_copied = model(tokens, **args, layer_weights=jax.tree.map(jnp.copy, model.layer_weights()))
    np.testing.assert_allclose(sliced, full, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(copied, sliced)
    for a, b in zip(jax.tree.leaves(cache), jax.tree.leaves(cache_copied)):
        np.testing.assert_array_equal(a, b)


def test_matmul_with_narrower_weights_against_numpy():
    """A bf16 weight takes the float32 input rounded to bf16 and accumulates in float32."""
    import ml_dtypes

    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((3, 64)).astype(np.float32), rng.standard_normal((64, 16)).astype(np.float32)
    w16 = w.astype(ml_dtypes.bfloat16)
    out = matmul(jnp.asarray(x), jnp.asarray(w16))
    reference = x.astype(ml_dtypes.bfloat16).astype(np.float64) @ w16.astype(np.float64)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
    assert np.abs(x.astype(np.float64) @ w - reference).max() > 1e-3  # the rounding is there to see
    np.testing.assert_array_equal(matmul(jnp.asarray(x), jnp.asarray(w)), jnp.asarray(x) @ jnp.asarray(w))


def test_bfloat16_decode_weights_stay_close_to_float32(model):
    """The sampler's bf16 copies: matmul and output-layer weights in bf16, norms kept in float32;
    the cached forward with them differs from the float32 one by bf16 rounding only."""
    layers, head = model.layer_weights(jnp.bfloat16), model.head_weight(jnp.bfloat16)
    for name, weight in layers[0].items():
        assert weight.dtype == (jnp.bfloat16 if name in MATMUL_WEIGHTS else jnp.float32), name
    assert head.dtype == jnp.bfloat16 and head.shape == model.lm_head.shape
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, 512, (2, 6)), jnp.int32)
    full = np.asarray(model(tokens))
    positions, mask = jnp.broadcast_to(jnp.arange(6), (2, 6)), jnp.ones((2, 8), bool)
    args = dict(positions=positions, cache=model.init_cache(2, 8), cache_index=0, kv_mask=mask)
    narrow, _ = model(tokens, **args, layer_weights=layers, head_weight=head)
    assert narrow.dtype == jnp.float32
    assert 0 < np.abs(np.asarray(narrow) - full).max() < 0.02 * np.abs(full).max()
    np.testing.assert_array_equal(np.argmax(narrow, -1), np.argmax(full, -1))


def test_kv_mask_without_cache_hides_padding(model):
    row = np.random.default_rng(1).integers(0, 512, 6)
    padded = np.concatenate([np.zeros(2, np.int64), row])[None].astype(np.int32)
    mask = np.array([[False, False] + [True] * 6])
    positions = np.maximum(np.arange(8) - 2, 0)[None].astype(np.int32)
    logits = model(jnp.asarray(padded), positions=jnp.asarray(positions), kv_mask=jnp.asarray(mask))
    np.testing.assert_allclose(logits[0, 2:], model(jnp.asarray(row[None], jnp.int32))[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_keeps_values_and_gradients(remat):
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, 512, (2, 8)), jnp.int32)

    def loss_and_grad(config):
        model = init_model(config, seed=0)
        graphdef, params = nnx.split(model, nnx.Param)
        loss = lambda p: jnp.mean(nnx.merge(graphdef, p)(tokens) ** 2)  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    base_loss, base_grad = loss_and_grad(tiny_config())
    loss, grad = loss_and_grad(tiny_config(remat=remat))
    np.testing.assert_allclose(loss, base_loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(base_grad)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, 512, (2, 8)), jnp.int32)
    model = init_model(tiny_config(dtype="bfloat16"), seed=0)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    logits = model(tokens)
    assert logits.dtype == jnp.float32
    assert all(k.dtype == jnp.bfloat16 for k in model.init_cache(2, 4).k)
    reference = init_model(tiny_config(), seed=0)(tokens)
    assert 0 < np.abs(np.asarray(logits - reference)).max() < 0.05  # bf16 rounding, not a different model


HF = dict(model_type="llama", vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
          num_attention_heads=2, rms_norm_eps=1e-6)


def test_config_errors_name_the_problem():
    with pytest.raises(WeightError, match="unknown model_type 'gpt2'.*supported: llama, qwen2, qwen3"):
        DecoderConfig.from_hf_dict(dict(HF, model_type="gpt2"))
    with pytest.raises(WeightError, match="missing required key 'intermediate_size'"):
        DecoderConfig.from_hf_dict({k: v for k, v in HF.items() if k != "intermediate_size"})
    with pytest.raises(WeightError, match="unsupported rope_type 'yarn'"):
        DecoderConfig.from_hf_dict(dict(HF, rope_scaling={"rope_type": "yarn", "factor": 2.0}))
    with pytest.raises(WeightError, match="rope scaling \\(llama3\\) is missing required key 'low_freq_factor'"):
        DecoderConfig.from_hf_dict(dict(HF, rope_parameters={"rope_type": "llama3", "factor": 8.0, "rope_theta": 1e4}))
    with pytest.raises(WeightError, match="num_heads 3 is not a multiple of num_kv_heads 2"):
        tiny_config(num_heads=3)


def test_config_hf_dict_round_trip():
    for config in (tiny_config(), tiny_config(model_type="qwen2", qkv_bias=True, eos_token_id=(1, 2)),
                   tiny_config(model_type="qwen3", qk_norm=True, rope_type="llama3", rope_factor=8.0)):
        assert DecoderConfig.from_hf_dict(config.to_hf_dict()) == config
