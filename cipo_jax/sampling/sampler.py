"""Jitted rollout sampling: prefill each prompt once, share its KV cache among its n samples,
then decode every row inside one `lax.while_loop` that exits when all rows have stopped.

Two compiled programs per bucketed shape: `_prefill` (prompt forward + first token) and
`_decode` (the loop, with the decode state donated). Weights are traced arguments, and so are
temperature, top-k, top-p, the stop tokens and max_new_tokens: changing them never recompiles.

Cache layout (S = Lp + N slots per row): the prompt is right-padded into slots [0, Lp) (its
real tokens in [0, len)), generated token t goes to slot Lp + t for every row, and `kv_mask`
hides the padding slots in between. Positions are per row: prompt token i has position i,
generated token t has position len + t, so ragged prompts see exactly what they would alone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cipo_jax.sampling.buckets import MIN_NEW_TOKENS_BUCKET, bucket, check_prompts, pad_prompts, pad_stop_tokens
from cipo_jax.sampling.filters import is_stop, sample_tokens
from cipo_jax.sharding import BATCH_AXES, batch_shards

log = logging.getLogger(__name__)

_COMPILES: dict[str, int] = {"layers": 0, "prefill": 0, "decode": 0}


def compile_count() -> int:
    """How many sampler programs (layer split, prefill, decode) have been traced and compiled in this process."""
    return sum(_COMPILES.values())


def _note_compile(name: str, **shapes) -> None:
    # Runs only while jax traces, i.e. once per new input signature, which is once per compile.
    _COMPILES[name] += 1
    log.info("sampler: compiling %s for %s (compile #%d)", name, shapes, compile_count())


@dataclass
class SampleResult:
    """Host-side rollouts, prompt-major: rows [i*n, (i+1)*n) are the n samples of prompt i."""

    tokens: list[list[int]]  # generated ids, prompt excluded, the stop token included
    logprobs: list[list[float]]  # log_softmax(logits / T) at each token (unfiltered; raw if T in {0, 1})
    finish_reason: list[str]  # "stop" or "length"
    prompt_index: list[int] = field(default_factory=list)  # which prompt each row samples


@struct.dataclass
class SamplingParams:
    """The per-call knobs, all traced."""

    temperature: jax.Array  # f32 []; 0 = greedy
    top_k: jax.Array  # i32 []; <= 0 disables
    top_p: jax.Array  # f32 []; >= 1 disables
    stop_tokens: jax.Array  # i32 [Ks], padded with -1
    max_new_tokens: jax.Array  # i32 []; <= N, the bucketed width of the output


@struct.dataclass
class DecodeState:
    """Everything the decode loop carries (B = prompts x n rows, S cache slots, N output width)."""

    cache: object  # KVCache, L leaves [B, K, S, D] each for keys and values
    kv_mask: jax.Array  # bool [B, S]: slots holding real tokens
    tokens: jax.Array  # i32 [B, N]: generated tokens, 0 after a row stops
    logprobs: jax.Array  # f32 [B, N]
    prompt_len: jax.Array  # i32 [B]: position of generated token 0
    length: jax.Array  # i32 [B]: generated tokens so far, the stop token included
    done: jax.Array  # bool [B]
    step: jax.Array  # i32 []: tokens generated so far by rows still running
    key: jax.Array  # PRNG key of this call; step t uses fold_in(key, t)


def _cache_sharding(mesh: Optional[Mesh], cache) -> object:
    """Constrain cache leaves [B, K, S, D]: batch over data x fsdp, kv heads over tensor."""
    if mesh is None:
        return cache
    from cipo_jax.sharding import logical_to_mesh

    def one(x):
        spec = logical_to_mesh(("act_batch", "act_kv_heads", None, None), x.shape, dict(mesh.shape))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return jax.tree.map(one, cache)


@functools.partial(jax.jit, static_argnames=("graphdef", "dtype"))
def _decode_weights(graphdef, weights, dtype):
    """Each layer's weights as its own array, and with `dtype` the matmul weights and the output
    layer's in that dtype (else the output layer is read in place: None)."""
    _note_compile("layers")
    model = nnx.merge(graphdef, weights)
    return model.layer_weights(dtype), None if dtype is None else model.head_weight(dtype)


@functools.partial(jax.jit, static_argnames=("graphdef", "n", "new_width", "mesh"))
def _prefill(graphdef, weights, copies, tokens, prompt_len, params: SamplingParams, key, *, n, new_width, mesh):
    """Prompt forward for [Pb, Lp] right-padded prompts, cache copied to n rows each, first token drawn."""
    rows, width = tokens.shape
    _note_compile("prefill", prompts=rows, prompt_len=width, n=n, new_tokens=new_width)
    model = nnx.merge(graphdef, weights)
    slots = jnp.arange(width)
    prompt_mask = slots[None, :] < prompt_len[:, None]  # [Pb, Lp]
    cache = model.init_cache(rows, width)
    logits_p1v, cache = model(
        tokens,
        positions=jnp.broadcast_to(slots, tokens.shape),
        cache=cache,
        cache_index=jnp.int32(0),
        kv_mask=prompt_mask,
        logits_at=jnp.maximum(prompt_len - 1, 0)[:, None],
        layer_weights=copies[0],
        head_weight=copies[1],
    )
    last_logits = logits_p1v[:, 0]

    # Share each prompt's prefix among its n samples: repeat rows, then widen to S slots.
    batch, cache_len = rows * n, width + new_width
    full = model.init_cache(batch, cache_len)
    cache = jax.tree.map(
        lambda dst, src: jax.lax.dynamic_update_slice(dst, jnp.repeat(src, n, axis=0).astype(dst.dtype), (0,) * dst.ndim),
        full,
        cache,
    )
    cache = _cache_sharding(mesh, cache)
    prompt_len = jnp.repeat(prompt_len, n)
    token, logprob = sample_tokens(
        jnp.repeat(last_logits, n, axis=0), jax.random.fold_in(key, 0), params.temperature, params.top_k, params.top_p
    )
    padding_row = prompt_len == 0
    token = jnp.where(padding_row, 0, token)
    logprob = jnp.where(padding_row, 0.0, logprob)
    done = padding_row | is_stop(token, params.stop_tokens) | (params.max_new_tokens <= 1)
    return DecodeState(
        cache=cache,
        kv_mask=jnp.arange(cache_len)[None, :] < prompt_len[:, None],
        tokens=jnp.zeros((batch, new_width), jnp.int32).at[:, 0].set(token),
        logprobs=jnp.zeros((batch, new_width), jnp.float32).at[:, 0].set(logprob),
        prompt_len=prompt_len,
        length=jnp.where(padding_row, 0, 1).astype(jnp.int32),
        done=done,
        step=jnp.int32(1),
        key=key,
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "mesh"), donate_argnames=("state",))
def _decode(graphdef, weights, copies, state: DecodeState, params: SamplingParams, *, mesh):
    """Generate until every row has stopped or max_new_tokens tokens exist."""
    batch, new_width = state.tokens.shape
    prompt_width = state.kv_mask.shape[1] - new_width
    _note_compile("decode", batch=batch, cache_len=state.kv_mask.shape[1], new_tokens=new_width)
    model = nnx.merge(graphdef, weights)

    def running(s: DecodeState):
        return (s.step < params.max_new_tokens) & ~jnp.all(s.done)

    def step(s: DecodeState):
        previous = jax.lax.dynamic_index_in_dim(s.tokens, s.step - 1, axis=1, keepdims=True)  # [B, 1]
        slot = prompt_width + s.step - 1
        kv_mask = jax.lax.dynamic_update_slice(s.kv_mask, jnp.ones((batch, 1), bool), (0, slot))
        logits, cache = model(
            previous,
            positions=(s.prompt_len + s.step - 1)[:, None],
            cache=s.cache,
            cache_index=slot,
            kv_mask=kv_mask,
            layer_weights=copies[0],
            head_weight=copies[1],
        )
        token, logprob = sample_tokens(
            logits[:, 0], jax.random.fold_in(s.key, s.step), params.temperature, params.top_k, params.top_p
        )
        token = jnp.where(s.done, 0, token)
        logprob = jnp.where(s.done, 0.0, logprob)
        done = s.done | is_stop(token, params.stop_tokens) | (s.step + 1 >= params.max_new_tokens)
        return s.replace(
            cache=_cache_sharding(mesh, cache),
            kv_mask=kv_mask,
            tokens=jax.lax.dynamic_update_slice(s.tokens, token[:, None], (0, s.step)),
            logprobs=jax.lax.dynamic_update_slice(s.logprobs, logprob[:, None], (0, s.step)),
            length=s.length + (~s.done).astype(jnp.int32),
            done=done,
            step=s.step + 1,
        )

    return jax.lax.while_loop(running, step, state)


def generate(
    model: nnx.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    n: int = 1,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    stop_tokens: Sequence[int] = (),
    seed: int = 0,
    mesh: Optional[Mesh] = None,
    max_len: Optional[int] = None,
    truncate_prompts: bool = False,
    weight_dtype: Optional[str] = None,
) -> SampleResult:
    """Sample n continuations of each prompt (token-id lists of any lengths).

    temperature 0 is greedy; top_k / top_p None disable them; a row ends at its first stop
    token (kept in the output) or after max_new_tokens. A prompt that does not fit with
    max_new_tokens in `max_len` (default: the model's max_position_embeddings) is a ValueError,
    or keeps its last tokens when truncate_prompts. With `mesh`, rows are split over
    `cipo_jax.sharding.BATCH_AXES` and the model should be placed by `cipo_jax.sharding.shard_model`.
    `weight_dtype` (e.g. "bfloat16"): the matmul and output-layer weights are copied to it once per
    call and multiplied with float32 accumulation (fewer bytes per decode step; logprobs then
    differ from a float32 forward's by the rounding, docs/performance.md); "float32", the
    parameters' own dtype, is the same as None.
    """
    config = model.config
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
    weight_dtype = _weight_dtype(weight_dtype)
    max_len = config.max_position_embeddings if max_len is None else max_len
    prompts = check_prompts(
        prompts, max_new_tokens=max_new_tokens, max_len=max_len, vocab_size=config.vocab_size, truncate=truncate_prompts
    )
    batch = pad_prompts(prompts, batch_multiple=batch_shards(mesh))
    params = SamplingParams(
        temperature=jnp.float32(temperature),
        top_k=jnp.int32(top_k or 0),
        top_p=jnp.float32(1.0 if top_p is None else top_p),
        stop_tokens=jnp.asarray(pad_stop_tokens(stop_tokens)),
        max_new_tokens=jnp.int32(max_new_tokens),
    )
    tokens, prompt_len = jnp.asarray(batch.tokens), jnp.asarray(batch.lengths)
    if mesh is not None:
        rows = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
        tokens = jax.device_put(tokens, NamedSharding(mesh, PartitionSpec(BATCH_AXES, None)))
        prompt_len = jax.device_put(prompt_len, rows)
    graphdef, weights = nnx.split(model)
    new_width = bucket(max_new_tokens, MIN_NEW_TOKENS_BUCKET)
    with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
        # On CPU, a copy of each layer's weights as its own array (once per call) makes every
        # decode step's matmuls ~1.5x faster than slicing the stack; accelerators slice in place
        # unless the copy narrows the weights.
        copies = (_decode_weights(graphdef, weights, weight_dtype) if weight_dtype or _on_cpu(weights)
                  else (None, None))
        state = _prefill(
            graphdef, weights, copies, tokens, prompt_len, params, jax.random.key(seed), n=n, new_width=new_width,
            mesh=mesh,
        )
        state = _decode(graphdef, weights, copies, state, params, mesh=mesh)
    return _to_host(state, batch.num_prompts * n, n, set(int(t) for t in stop_tokens))


def _weight_dtype(name: Optional[str]) -> Optional[str]:
    """The narrower dtype asked for, or None: parameters are float32, so "float32" asks for nothing."""
    if name is None:
        return None
    try:
        dtype = jnp.dtype(name)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"weight_dtype must be a floating dtype such as 'bfloat16', got {name!r}")
    return None if dtype == jnp.float32 else dtype.name


def _on_cpu(weights) -> bool:
    return all(d.platform == "cpu" for x in jax.tree.leaves(weights) for d in x.devices())


def _to_host(state: DecodeState, rows: int, n: int, stop: set[int]) -> SampleResult:
    from cipo_jax.distributed import to_host

    # Rows may live on other processes' devices (multi-host): every host gets all of them.
    tokens, logprobs, length = to_host((state.tokens, state.logprobs, state.length))
    out = SampleResult(tokens=[], logprobs=[], finish_reason=[], prompt_index=[])
    for r in range(rows):
        ids = tokens[r, : length[r]].tolist()
        out.tokens.append(ids)
        out.logprobs.append(logprobs[r, : length[r]].tolist())
        out.finish_reason.append("stop" if ids and ids[-1] in stop else "length")
        out.prompt_index.append(r // n)
    return out
