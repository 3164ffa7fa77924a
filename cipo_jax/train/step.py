"""The jitted update: `(state, batch, norms) -> (state, metrics)`, one optimizer step.

The batch arrives split into `accum` micro-batches (leading axis); a `lax.scan` sums their
gradients. Because every loss term is divided by a normaliser of the whole batch (see
`cipo.loss.loss_normalisers`), that sum IS the gradient of the big batch, and sharding the rows
over the data axes gives the same number again. A non-finite loss or gradient leaves
parameters and optimizer state untouched and is counted (`skipped`).

With `completion_width` W, the output layer and the log-softmax run only over a window of W
positions per row, starting at the row's first counted token: prompt positions are never in a
loss term, and the [rows, T, vocab] logits are the largest tensor of the step. Every step's
metrics carry `compiles` / `compile_s`, the XLA programs compiled in this process so far and
their seconds, so a run that recompiles after its first step shows it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cipo_jax.cipo.loss import LossBatch, LossConfig, Normalisers, cipo_loss, sft_loss, token_logprobs
from cipo_jax.config import OptimConfig
from cipo_jax.sharding import BATCH_AXES

_COMPILES = {"count": 0, "seconds": 0.0}


def _on_event(event: str, seconds: float, **_) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES["count"] += 1
        _COMPILES["seconds"] += seconds


jax.monitoring.register_event_duration_secs_listener(_on_event)


def compile_stats() -> tuple[int, float]:
    """(programs compiled by XLA in this process, seconds spent compiling them)."""
    return _COMPILES["count"], _COMPILES["seconds"]


@struct.dataclass
class TrainState:
    params: nnx.State  # the trained nnx.Param variables
    opt_state: Any
    updates: jax.Array  # int32 []: optimizer updates applied (skipped ones excluded)


def make_optimizer(cfg: OptimConfig, total_updates: int, lr: float | None = None) -> optax.GradientTransformation:
    """AdamW with linear warmup then cosine decay (or constant), after global-norm clipping."""
    peak = cfg.lr if lr is None else lr
    warmup = min(cfg.warmup_steps, max(total_updates - 1, 0))
    if cfg.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(0.0 if warmup else peak, peak, warmup,
                                                      max(total_updates, warmup + 1), end_value=0.1 * peak)
    else:
        schedule = optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)],
                                        [warmup]) if warmup else optax.constant_schedule(peak)
    chain = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
    chain.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))
    return optax.chain(*chain)


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, trainable params, everything else)."""
    return nnx.split(model, nnx.Param, ...)


def init_state(params: nnx.State, tx: optax.GradientTransformation, mesh: Mesh | None = None) -> TrainState:
    """The state before the first update, with every array placed as the jitted update returns it,
    so that the second update does not compile again."""
    # Not jitted: the moments (zeros_like of each parameter) then keep their parameter's sharding.
    # A jitted init drops its unused inputs and makes every moment on one device; replicated
    # across the mesh they cost memory and mismatch the FSDP-sharded moments the update returns.
    state = TrainState(params=params, opt_state=tx.init(params), updates=jnp.zeros((), jnp.int32))
    if mesh is None:
        return state
    # Scalars (step counts) come out with a SingleDeviceSharding, even on a one-device mesh; the
    # update returns them replicated on the mesh (checkpoint restore and donation also need
    # every array on the mesh).
    replicated = NamedSharding(mesh, PartitionSpec())
    on_mesh = lambda x: isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh  # noqa: E731
    return jax.tree.map(lambda x: x if on_mesh(x) else jax.device_put(x, replicated), state)


def policy_logprobs(graphdef: nnx.GraphDef, params: nnx.State, rest: nnx.State, tokens: jax.Array,
                    temperature: float, *, window_start: jax.Array | None = None,
                    completion_width: int | None = None) -> tuple[jax.Array, jax.Array]:
    """(logp, entropy) [N, T] of every token under the policy at the sampling temperature, so the
    ratio to the sampler's log-probs (log-softmax of logits / T) compares like with like.

    With `window_start` [N] and `completion_width` W, only tokens window_start .. +W-1 of each
    row are scored (their predictors' logits alone are computed); the rest of logp/entropy is 0.
    """
    model = nnx.merge(graphdef, params, rest)
    scale = 1.0 if temperature in (0.0, 1.0) else 1.0 / temperature
    if completion_width is None:
        return token_logprobs(model(tokens) * scale, tokens)
    T = tokens.shape[1]
    targets_nw = jnp.maximum(window_start, 1)[:, None] + jnp.arange(completion_width)  # token positions
    valid_nw = targets_nw < T
    targets_nw = jnp.minimum(targets_nw, T - 1)
    logits_nwv = model(tokens, logits_at=targets_nw - 1) * scale
    # token_logprobs scores token column t from logits column t-1: shift the targets one right.
    # (Selected by a masked sum, like every selection here: no gather for the partitioner.)
    at_nwt = targets_nw[:, :, None] == jnp.arange(T)
    window_tokens = jnp.sum(jnp.where(at_nwt, tokens[:, None, :], 0), axis=-1)
    logp, entropy = token_logprobs(jnp.pad(logits_nwv, ((0, 0), (0, 1), (0, 0))),
                                   jnp.pad(window_tokens, ((0, 0), (1, 0))))
    # Back to [N, T] by the transposed one-hot matmul of `select_positions` (no scatter to
    # partition); clipped positions past the row end add exactly 0 and take no gradient.
    one_hot = at_nwt.astype(logp.dtype)
    place = lambda x: jnp.einsum("nwt,nw->nt", one_hot, jnp.where(valid_nw, x[:, 1:], 0.0),  # noqa: E731
                                 precision=jax.lax.Precision.HIGHEST)
    return place(logp), place(entropy)


def make_logprobs(graphdef: nnx.GraphDef, rest: nnx.State, temperature: float) -> Callable:
    """The jitted `(params, tokens [A, n, T]) -> logp [A, n, T]`: the training forward's log-probs
    (of `policy_logprobs`, at the sampling temperature), one micro-batch of n rows at a time so
    that only one micro-batch's logits ever exist. Takes the update's `split_micro` layout, so
    it compiles once per shape bucket of the update."""

    def logprobs(params: nnx.State, tokens: jax.Array) -> jax.Array:
        return jax.lax.map(lambda t: policy_logprobs(graphdef, params, rest, t, temperature)[0], tokens)

    return jax.jit(logprobs)


def _tree_add(a, b):
    return jax.tree.map(jnp.add, a, b)


def _with_own_pi_old(micro: LossBatch, logp: jax.Array, at_pi_old: jax.Array, beta_kl: float) -> LossBatch:
    """`micro` with log pi_old taken from this very forward when `at_pi_old`, so that the ratio is
    exactly 1. In bf16 no separately compiled forward (the sampler's, a recompute) matches the
    update's bit for bit: XLA keeps excess precision wherever a program's fusions allow. Without a
    KL term ref_logp stands for pi_old too (the trainer's drift metric "kl") and follows."""
    own = lambda x: jnp.where(at_pi_old, jax.lax.stop_gradient(logp), x)  # noqa: E731
    return micro.replace(old_logp=own(micro.old_logp),
                         ref_logp=micro.ref_logp if beta_kl > 0 else own(micro.ref_logp))


def make_update(graphdef: nnx.GraphDef, rest: nnx.State, tx: optax.GradientTransformation, *,
                loss_cfg: LossConfig | None, temperature: float = 1.0,
                completion_width: int | None = None) -> Callable:
    """The jitted step. loss_cfg None = SFT (masked NLL over completion tokens).

    completion_width: an upper bound on the counted tokens of a row (e.g. the sampler's
    max_new_tokens), to score only that window; None scores every position.
    The step's `at_pi_old=True` (traced: no recompile) says the parameters are still those that
    sampled the rows: the ratio is then taken against the step's own forward (`_with_own_pi_old`).
    """

    def micro_loss(params, micro: LossBatch, norms: Normalisers | jax.Array, at_pi_old: jax.Array):
        start = jnp.argmax(micro.completion_mask > 0, axis=1) if completion_width else None
        logp, entropy = policy_logprobs(graphdef, params, rest, micro.tokens, temperature,
                                        window_start=start, completion_width=completion_width)
        if loss_cfg is None:
            return sft_loss(logp, micro, norms)
        return cipo_loss(logp, entropy, _with_own_pi_old(micro, logp, at_pi_old, loss_cfg.beta_kl), norms, loss_cfg)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def update(state: TrainState, batches: LossBatch | tuple[LossBatch, ...], norms, at_pi_old
               ) -> tuple[TrainState, dict[str, jax.Array]]:
        # Several groups of rows, each with its own padded length (e.g. short first attempts
        # and long correction prompts), add into one gradient without padding all to the longest.
        batches = (batches,) if isinstance(batches, LossBatch) else tuple(batches)
        first = jax.tree.map(lambda x: x[0], batches[0])
        metrics_shape = jax.eval_shape(lambda: micro_loss(state.params, first, norms, at_pi_old)[1])
        carry = (jax.tree.map(jnp.zeros_like, state.params),
                 jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_shape))

        def body(carry, micro):
            (_, metrics), grads = grad_fn(state.params, micro, norms, at_pi_old)
            return _tree_add(carry, (grads, metrics)), None

        for batch in batches:
            carry, _ = jax.lax.scan(body, carry, batch)
        grads, metrics = carry
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(grad_norm) & jnp.all(jnp.array([jnp.all(jnp.isfinite(v)) for v in
                                                                jax.tree.leaves(metrics)]))
        updates, new_opt = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = TrainState(params=keep(new_params, state.params), opt_state=keep(new_opt, state.opt_state),
                               updates=state.updates + finite.astype(jnp.int32))
        return new_state, {**metrics, "grad_norm": grad_norm, "skipped": (~finite).astype(jnp.float32)}

    jitted: dict[Any, Callable] = {}

    def for_layout(state: TrainState) -> Callable:
        # On a mesh the state returns with the shardings it came in with (init_state's, i.e.
        # shard_model's plan). Left to XLA's propagation, some come back otherwise (a norm scale
        # sharded over fsdp, an Adam moment laid out anew), and the next update, seeing other
        # input shardings, compiles again; so would the sampler, given the new parameters.
        shardings = jax.tree.map(lambda x: x.sharding, state)
        leaves, treedef = jax.tree.flatten(shardings)
        key = (treedef, tuple(leaves))
        if key not in jitted:
            pin = {}
            if all(isinstance(s, NamedSharding) for s in leaves):  # metrics replicated
                pin = {"out_shardings": (shardings, NamedSharding(leaves[0].mesh, PartitionSpec()))}
            jitted[key] = jax.jit(update, donate_argnums=(0,), **pin)
        return jitted[key]

    def run(state: TrainState, batches, norms, *, at_pi_old: bool = False) -> tuple[TrainState, dict[str, jax.Array]]:
        state, metrics = for_layout(state)(state, batches, norms, jnp.asarray(at_pi_old))
        count, seconds = compile_stats()
        return state, {**metrics, "compiles": jnp.float32(count), "compile_s": jnp.float32(seconds)}

    return run


def split_micro(batch: Any, accum: int, mesh: Mesh | None) -> Any:
    """[N, ...] -> [accum, N/accum, ...] for every array of `batch` (a LossBatch, or one array),
    rows sharded over the data axes of `mesh`."""
    N = jax.tree.leaves(batch)[0].shape[0]
    if N % accum:
        raise ValueError(f"{N} rows do not split into {accum} micro-batches")
    out = jax.tree.map(lambda x: jnp.reshape(x, (accum, N // accum) + x.shape[1:]), batch)
    if mesh is None:
        return out
    def place(x):
        spec = PartitionSpec(None, BATCH_AXES, *([None] * (x.ndim - 2)))
        return jax.device_put(x, NamedSharding(mesh, spec))
    return jax.tree.map(place, out)
