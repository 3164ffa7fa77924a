"""Supervised warm start: masked NLL on the tasks' reference responses (small models start from
random weights and need a policy that sometimes succeeds before RL has any signal)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from cipo_jax.cipo.loss import LossBatch
from cipo_jax.cipo.step import Row
from cipo_jax.cipo.template import Request, render
from cipo_jax.config import Config
from cipo_jax.data.tasks import Task
from cipo_jax.data.tokenizer import Tokenizer
from cipo_jax.sharding import batch_shards
from cipo_jax.train import step as step_lib
from cipo_jax.train.batch import pack_rows
from cipo_jax.train.metrics import MetricsWriter, truncate_metrics


class SFTError(RuntimeError):
    pass


def sft_request(task: Task, pairs: list[Task], correction_fraction: float, rng: np.random.Generator) -> Request:
    """The prompt an SFT example is shown: the task itself, or (with probability
    correction_fraction) a correction turn of a stand-in attempt, which is the task's own
    response or, half the time, another task's response (usually wrong)."""
    if correction_fraction <= 0 or rng.random() >= correction_fraction:  # 0: no draw, the old batch order
        return Request(task)
    stand_in = task if rng.random() < 0.5 else pairs[int(rng.integers(0, len(pairs)))]
    return Request(task, attempt=stand_in.response)


def run_sft(cfg: Config, params: nnx.State, *, graphdef: nnx.GraphDef, rest: nnx.State, tokenizer: Tokenizer,
            tasks: list[Task], mesh, run_dir: Path, max_len: int, is_main: bool = True, progress: bool = True,
            stop: Callable[[], bool] = lambda: False) -> nnx.State:
    """`cfg.sft.steps` updates from `params` with their own optimizer; returns the new parameters.
    `stop()` true ends it early (a signal); rows go to <run_dir>/sft_metrics.jsonl."""
    pairs = [t for t in tasks if t.response]
    if not pairs:
        raise SFTError(f"sft.steps={cfg.sft.steps} but tasks {cfg.tasks.spec!r} carry no reference responses")
    tx = step_lib.make_optimizer(cfg.optim, cfg.sft.steps, lr=cfg.sft.lr)
    update = step_lib.make_update(graphdef, rest, tx, loss_cfg=None)
    state = step_lib.init_state(params, tx, mesh)
    shards = batch_shards(mesh)
    eos = tokenizer.eos_id
    writer = MetricsWriter(run_dir, total_steps=cfg.sft.steps, start_step=0, tensorboard=False, is_main=is_main,
                           progress=progress)
    writer.path = run_dir / "sft_metrics.jsonl"
    if is_main:
        truncate_metrics(writer.path, -1)  # SFT runs only on a fresh start: older rows are stale
    rng = np.random.default_rng([cfg.run.seed, 7])
    try:
        for i in range(cfg.sft.steps):
            if stop():
                break
            rows = []
            for t in (pairs[j] for j in rng.integers(0, len(pairs), cfg.sft.batch_size)):
                completion = tokenizer.encode(t.response) + [eos]
                rows.append(Row(prompt=render(sft_request(t, pairs, cfg.sft.correction_fraction, rng), tokenizer,
                                              chat=cfg.tasks.chat, template=cfg.cipo.template),
                                completion=completion, logprobs=[0.0] * len(completion)))
            # Lengths to a multiple of 8, not 32: SFT rows are short (a tiny task's are ~17 tokens) and
            # the longest of a batch varies little, so the finer bucket halves the compute for few compiles.
            packed = pack_rows(rows, row_multiple=cfg.optim.grad_accum * shards, len_multiple=8, max_len=max_len)
            batch = LossBatch.for_sft(packed["tokens"], packed["completion_mask"])
            num_tokens = jnp.float32(packed["completion_mask"].sum())
            state, metrics = update(state, step_lib.split_micro(batch, cfg.optim.grad_accum, mesh), num_tokens)
            writer.write(i, {k: float(v) for k, v in metrics.items()})
    finally:
        writer.close()
    return state.params
