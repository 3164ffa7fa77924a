"""The sampler on a tiny random model, checked against the plain (cache-free) forward pass and
a NumPy re-implementation of temperature / top-k / top-p."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from cipo_jax.config import MeshConfig
from cipo_jax.models import init_model, tiny_config
from cipo_jax.sampling import compile_count, generate
from cipo_jax.sampling.filters import first_argmax, sample_tokens
from cipo_jax.sharding import make_mesh, shard_model

LENGTHS = (3, 9, 1, 14, 6)


@pytest.fixture(scope="module")
def model():
    return init_model(tiny_config(), seed=0)


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 512, size=n).tolist() for n in LENGTHS]


REF_WIDTH = 32  # cache-free reference forwards run on sequences right-padded to this width


@functools.cache
def plain_forward(model):
    """The model's cache-free forward, jitted once per model: int32 [B, REF_WIDTH] -> logits."""
    graphdef, state = nnx.split(model)
    return jax.jit(lambda tokens: nnx.merge(graphdef, state)(tokens))


def padded(seq):
    return jnp.asarray([list(seq) + [0] * (REF_WIDTH - len(seq))])  # causal: padding after is unseen


def teacher_forced_logprobs(model, prompt, generated, temperature):
    """log_softmax(logits / T) of each generated token, from one cache-free forward pass."""
    logits = plain_forward(model)(padded(prompt + generated))[0, len(prompt) - 1 : len(prompt) + len(generated) - 1]
    logp = jax.nn.log_softmax(logits / (temperature or 1.0), axis=-1)
    return np.asarray(logp[jnp.arange(len(generated)), jnp.asarray(generated)])


def greedy_reference(model, prompt, steps):
    seq = list(prompt)
    for _ in range(steps):
        seq.append(int(jnp.argmax(plain_forward(model)(padded(seq))[0, len(seq) - 1])))
    return seq[len(prompt) :]


def test_greedy_matches_uncached_argmax_loop(model, prompts):
    out = generate(model, prompts, max_new_tokens=12, temperature=0.0)
    for prompt, tokens, logprobs in zip(prompts, out.tokens, out.logprobs):
        assert tokens == greedy_reference(model, prompt, 12)
        np.testing.assert_allclose(logprobs, teacher_forced_logprobs(model, prompt, tokens, 0.0), atol=1e-4)
    assert out.finish_reason == ["length"] * len(prompts)
    assert out.prompt_index == list(range(len(prompts)))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_equal_teacher_forced(model, prompts, temperature):
    n = 3
    out = generate(model, prompts, max_new_tokens=12, n=n, temperature=temperature, top_k=40, top_p=0.9, seed=3)
    assert len(out.tokens) == len(prompts) * n
    for row, (tokens, logprobs) in enumerate(zip(out.tokens, out.logprobs)):
        prompt = prompts[row // n]  # prompt-major
        assert out.prompt_index[row] == row // n
        ref = teacher_forced_logprobs(model, prompt, tokens, temperature)
        np.testing.assert_allclose(logprobs, ref, atol=1e-4)
    # the n samples of one prompt differ from each other (independent draws from a shared prefix)
    assert len({tuple(t) for t in out.tokens[:n]}) > 1


def numpy_filtered_probs(logits, temperature, top_k, top_p):
    """softmax(logits / T) restricted to top-k, then to the smallest prefix with mass >= p."""
    z = logits.astype(np.float64) / temperature
    order = np.argsort(-z, kind="stable")
    keep = np.zeros_like(z, dtype=bool)
    keep[order[:top_k]] = True
    p = np.exp(z - z.max()) * keep
    p /= p.sum()
    mass = 0.0
    nucleus = np.zeros_like(keep)
    for i in order[:top_k]:
        nucleus[i] = True
        mass += p[i]
        if mass >= top_p:
            break
    q = p * nucleus
    return q / q.sum()


def test_bf16_weights_logprobs_within_rounding_of_teacher_forced(model, prompts):
    """weight_dtype=bfloat16 (bf16 weight copies, float32 accumulation): each sampled token's
    log-prob is the float32 forward's up to the weights' rounding, not bit-equal."""
    out = generate(model, prompts, max_new_tokens=8, n=2, temperature=1.0, seed=2, weight_dtype="bfloat16")
    gaps = np.concatenate([
        np.abs(np.asarray(lp) - teacher_forced_logprobs(model, prompts[row // 2], tokens, 1.0))
        for row, (tokens, lp) in enumerate(zip(out.tokens, out.logprobs))])
    assert 0 < gaps.max() < 0.02
    for bad in ("int8", "no-such-dtype"):
        with pytest.raises(ValueError, match="weight_dtype"):
            generate(model, prompts, max_new_tokens=4, weight_dtype=bad)
    same = generate(model, prompts, max_new_tokens=4, temperature=0.0, weight_dtype="float32")
    assert same.logprobs == generate(model, prompts, max_new_tokens=4, temperature=0.0).logprobs


def test_first_argmax_and_draw_match_jax_reference():
    """The sampler's two-reduction argmax is jnp.argmax (ties, -inf rows, NaN), and a sampled
    token is the one jax.random.categorical draws from the same key, with log_softmax's logprob."""
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 3, size=(64, 50)).astype(np.float32)  # many ties
    x[1] = -np.inf
    x[2, [7, 30]] = np.nan
    x[3, 40:] = np.inf
    assert np.array_equal(first_argmax(jnp.asarray(x)), np.argmax(x, axis=-1))
    logits = jnp.asarray(rng.normal(size=(16, 300)).astype(np.float32) * 3)
    draw = jax.jit(sample_tokens)  # one compile: the knobs are traced
    for seed in range(5):
        key = jax.random.key(seed)
        for temperature in (0.0, 0.7, 1.0):
            token, logp = draw(logits, key, jnp.float32(temperature), jnp.int32(0), jnp.float32(1.0))
            scaled = logits / (temperature or 1.0)
            want = jnp.argmax(logits, -1) if temperature == 0 else jax.random.categorical(key, scaled, axis=-1)
            assert np.array_equal(token, want)
            np.testing.assert_allclose(logp, jax.nn.log_softmax(scaled, -1)[jnp.arange(16), want], rtol=0, atol=1e-5)


def test_first_token_distribution_chi_square(model, prompts):
    temperature, top_k, top_p = 0.1, 60, 0.9
    prompt = prompts[1]
    logits = np.asarray(model(jnp.asarray([prompt]))[0, -1])
    expected_p = numpy_filtered_probs(logits, temperature, top_k, top_p)
    counts = np.zeros_like(expected_p)
    for seed in range(5):
        out = generate(model, [prompt], max_new_tokens=1, n=4096, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        np.add.at(counts, [t[0] for t in out.tokens], 1)
    total = counts.sum()
    assert total == 5 * 4096
    assert counts[expected_p == 0].sum() == 0, "sampled a token that top-k/top-p removed"
    kept = expected_p > 0
    assert 5 < kept.sum() < top_k  # both filters bite
    expected = expected_p[kept] * total
    # pool rare tokens so every chi-square cell expects >= 5
    rare = expected < 5
    obs = np.append(counts[kept][~rare], counts[kept][rare].sum())
    exp = np.append(expected[~rare], expected[rare].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    assert stats.chisquare(obs, exp).pvalue > 1e-3


def test_stop_tokens_end_rows_separately(model, prompts):
    free = generate(model, prompts, max_new_tokens=12, temperature=0.0)
    stops = [free.tokens[0][2], free.tokens[3][5]]
    out = generate(model, prompts, max_new_tokens=12, temperature=0.0, stop_tokens=stops)
    lengths = set()
    for full, tokens, logprobs, reason, ref_lp in zip(free.tokens, out.tokens, out.logprobs, out.finish_reason, free.logprobs):
        first = next((i for i, t in enumerate(full) if t in stops), None)
        if first is None:
            assert tokens == full and reason == "length"
        else:
            assert tokens == full[: first + 1] and reason == "stop"
        assert logprobs == pytest.approx(ref_lp[: len(tokens)], abs=1e-5)
        lengths.add(len(tokens))
    assert len(lengths) >= 2


def test_knobs_are_traced_not_recompiled(model, prompts):
    kw = dict(max_new_tokens=10, seed=1)
    generate(model, prompts, temperature=1.0, **kw)
    before = compile_count()
    greedy = generate(model, prompts, temperature=0.0, **kw).tokens
    assert generate(model, prompts, temperature=1.0, top_k=1, **kw).tokens == greedy
    assert generate(model, prompts, temperature=0.5, top_p=1e-6, **kw).tokens == greedy
    sampled = generate(model, prompts, temperature=1.5, top_k=100, top_p=0.95, **kw).tokens
    assert sampled != greedy
    stop = greedy[0][2]
    stopped = generate(model, prompts, temperature=0.0, stop_tokens=[stop], **kw)
    assert stopped.tokens[0] == greedy[0][: greedy[0].index(stop) + 1] and stopped.finish_reason[0] == "stop"
    shorter = generate(model, prompts, temperature=0.0, max_new_tokens=9, seed=1)  # same bucket
    assert shorter.tokens == [g[:9] for g in greedy]
    assert compile_count() == before


def test_seed_determinism(model, prompts):
    a = generate(model, prompts, max_new_tokens=10, temperature=1.0, seed=7)
    b = generate(model, prompts, max_new_tokens=10, temperature=1.0, seed=7)
    c = generate(model, prompts, max_new_tokens=10, temperature=1.0, seed=8)
    assert a.tokens == b.tokens and a.logprobs == b.logprobs
    assert a.tokens != c.tokens


def test_n_samples_share_prompt_greedy(model, prompts):
    one = generate(model, prompts, max_new_tokens=10, temperature=0.0)
    four = generate(model, prompts, max_new_tokens=10, temperature=0.0, n=4)
    assert four.tokens == [t for t in one.tokens for _ in range(4)]


@pytest.mark.parametrize("weight_dtype", [None, "bfloat16"])
def test_mesh_2x2x2_matches_single_device(prompts, weight_dtype):
    assert len(jax.devices()) == 8
    args = dict(max_new_tokens=12, temperature=0.0, n=2, weight_dtype=weight_dtype)
    single = generate(init_model(tiny_config(), seed=0), prompts, **args)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded_model = shard_model(init_model(tiny_config(), seed=0), mesh)
    sharded = generate(sharded_model, prompts, mesh=mesh, **args)
    assert sharded.tokens == single.tokens
    np.testing.assert_allclose(np.concatenate(sharded.logprobs), np.concatenate(single.logprobs), atol=1e-5)


def test_context_budget_and_bad_input(model, prompts):
    long = [i % 512 for i in range(1000)]
    with pytest.raises(ValueError, match=r"prompt 1 has 1000 tokens.*max_new_tokens=30.*max_len=1024"):
        generate(model, [[1, 2], long], max_new_tokens=30)
    with pytest.raises(ValueError, match=r"prompt 0 has 20 tokens"):
        generate(model, [list(range(20))], max_new_tokens=8, max_len=24)
    cut = generate(model, [list(range(20))], max_new_tokens=8, max_len=24, truncate_prompts=True, temperature=0.0)
    assert cut.tokens == generate(model, [list(range(4, 20))], max_new_tokens=8, temperature=0.0).tokens
    with pytest.raises(ValueError, match="prompt 1 must be a non-empty"):
        generate(model, [[1], []], max_new_tokens=4)
    with pytest.raises(ValueError, match=r"prompt 0 has token ids outside \[0, 512\)"):
        generate(model, [[512]], max_new_tokens=4)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, prompts, max_new_tokens=4, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompts, max_new_tokens=4, temperature=-1.0)
