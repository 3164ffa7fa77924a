"""The training loop: optional SFT warm start (`sft.py`), then CIPO (or GRPO when cipo.C = 0)
steps, checkpoints and signals. One step's host side is `cipo/step.py`, its update `step.py`.

Everything that decides what a step does is a pure function of (config, step, checkpointed
state): sampling seeds and source selection derive from (run.seed, step), the data order from
(tasks.seed, epoch), and params, optimizer state, data cursor and replay state are all in the
checkpoint. So a resumed run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cipo_jax import distributed
from cipo_jax.cipo.correction import ReplayState
from cipo_jax.cipo.loss import LOSS_METRICS, LossBatch, loss_config, loss_normalisers
from cipo_jax.cipo.step import CORRECTION, ORIGINAL, Row
from cipo_jax.cipo.template import render_correction, render_prompt
from cipo_jax.config import Config, save_config
from cipo_jax.configlib import to_dict
from cipo_jax.data.load import load_tasks
from cipo_jax.data.tasks import Task
from cipo_jax.sharding import batch_shards, make_mesh, shard_model
from cipo_jax.train import step as step_lib
from cipo_jax.train.batch import bucket_rows, check_completion_window, pack_rows
from cipo_jax.train.checkpoint import Checkpointer, abstract_like
from cipo_jax.train.metrics import MetricsWriter, clean_value, truncate_metrics
from cipo_jax.train.policy import build_model, build_tokenizer, checkpoint_tree, rl_optimizer
from cipo_jax.train.sft import SFTError, run_sft

log = logging.getLogger(__name__)

UPDATE_METRICS = (*LOSS_METRICS, "grad_norm")  # what one optimizer update reports
# |sampler - training forward| log-prob over a step's counted tokens, with sampling.recompute_logprobs
GAP_METRICS = ("logprob_gap_mean", "logprob_gap_max")


class TrainingError(RuntimeError):
    pass


@dataclass
class Progress:
    """Host-side training state that goes into every checkpoint's JSON record."""

    step: int = 0  # RL steps completed
    cursor: int = 0  # prompts consumed from the task stream
    replay: ReplayState | None = None
    bad_steps: int = 0  # consecutive skipped (non-finite) updates
    skipped_total: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "cursor": self.cursor, "replay": self.replay.to_dict(),
                "bad_steps": self.bad_steps, "skipped_total": self.skipped_total}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Progress":
        return cls(step=int(d["step"]), cursor=int(d["cursor"]), replay=ReplayState.from_dict(d["replay"]),
                   bad_steps=int(d["bad_steps"]), skipped_total=int(d["skipped_total"]))


def check_run_dir(run_dir: Path) -> None:
    """Fail before any work if the run directory cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write_probe{jax.process_index()}"  # one per process: they may share run_dir
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as e:
        raise TrainingError(f"run directory {run_dir} is not writable: {e.strerror or e}") from None


def check_prompt_lengths(cfg: Config, tasks: list[Task], tokenizer, context: int) -> None:
    """Fail before any work when the longest prompt (or, with corrections on, its correction prompt
    quoting a full-length attempt) cannot fit with sampling.max_new_tokens in the model context."""
    new = cfg.sampling.max_new_tokens
    lengths = [len(render_prompt(t, tokenizer, chat=cfg.tasks.chat)) for t in tasks]
    i = int(np.argmax(lengths))
    if lengths[i] + new > context:
        raise ValueError(f"task {tasks[i].id!r}: prompt of {lengths[i]} tokens + sampling.max_new_tokens={new} "
                         f"exceeds the model context of {context} tokens")
    if cfg.cipo.C > 0:
        # The attempt is re-encoded inside the correction prompt; its length is about max_new.
        need = len(render_correction(tasks[i], "", tokenizer, chat=cfg.tasks.chat, template=cfg.cipo.template)) + 2 * new
        if need > context:
            raise ValueError(f"task {tasks[i].id!r}: a correction prompt (prompt, a {new}-token attempt, template) plus "
                             f"sampling.max_new_tokens={new} needs up to {need} tokens, over the model context of "
                             f"{context}; lower sampling.max_new_tokens or set cipo.C=0")


def _concat_rows(batches: list[LossBatch]) -> LossBatch:
    """Rows of several batches in one, padded to the longest (for the global normalisers)."""
    T = max(b.tokens.shape[1] for b in batches)
    pad = lambda x: jnp.pad(x, [(0, 0), (0, T - x.shape[1])]) if x.ndim == 2 else x
    return jax.tree.map(lambda *xs: jnp.concatenate([pad(x) for x in xs]), *batches)


def recomputed_old_logp(sampler_logp: np.ndarray, recomputed: np.ndarray, mask: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(log pi_old: the training forward's log-probs on counted tokens, |sampler - recomputed| there)."""
    counted = mask > 0
    return np.where(counted, recomputed, sampler_logp), np.abs(sampler_logp - recomputed)[counted]


def logprob_gap_metrics(gaps: list[np.ndarray]) -> dict[str, float]:
    """GAP_METRICS of one step from the per-batch gaps of `recomputed_old_logp`."""
    gap = np.concatenate(gaps)
    if not gap.size:
        return dict.fromkeys(GAP_METRICS, float("nan"))
    return {"logprob_gap_mean": float(gap.mean()), "logprob_gap_max": float(gap.max())}


def task_stream(tasks: list[Task], seed: int, cursor: int, count: int) -> list[Task]:
    """Prompts [cursor, cursor+count) of the endless stream: each epoch a fresh permutation."""
    out = []
    n = len(tasks)
    for k in range(cursor, cursor + count):
        epoch, idx = divmod(k, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.append(tasks[perm[idx]])
    return out


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919) % (2**31 - 1)


class Trainer:
    def __init__(self, cfg: Config, *, progress_bar: bool = True):
        self.cfg = cfg
        self.run_dir = Path(cfg.run.run_dir)
        check_run_dir(self.run_dir)
        self.progress_bar = progress_bar
        self.is_main = jax.process_index() == 0
        self._stop_signal: int | None = None

        self.tasks = load_tasks(cfg.tasks.spec, size=cfg.tasks.size, seed=cfg.tasks.seed, split="train")
        if not self.tasks:
            raise TrainingError(f"tasks.spec {cfg.tasks.spec!r} gave no tasks")
        with distributed.main_first("tokenizer"):  # process 0 writes a trained tokenizer, the others read it
            self.tokenizer = build_tokenizer(cfg, self.tasks, self.run_dir)
        self.mesh = make_mesh(cfg.mesh)
        model = build_model(cfg, self.tokenizer, seed=cfg.run.seed)
        check_prompt_lengths(cfg, self.tasks, self.tokenizer, model.config.max_position_embeddings)
        self.model = shard_model(model, self.mesh)
        self.graphdef, params, self.rest = step_lib.split_model(self.model)
        self.shards = batch_shards(self.mesh)
        self.loss_cfg = loss_config(cfg)
        self.tx = rl_optimizer(cfg)
        self.state = step_lib.init_state(params, self.tx, self.mesh)
        self.ref_params = None
        self.progress = Progress(replay=ReplayState.initial(cfg))
        self.ckpt = Checkpointer(self.run_dir / "checkpoints", keep=cfg.run.keep_checkpoints)
        # Completions never exceed sampling.max_new_tokens: the output layer scores that window
        # of each row only (prompt positions are in no loss term; `_pack` checks the bound).
        self._update = step_lib.make_update(self.graphdef, self.rest, self.tx, loss_cfg=self.loss_cfg,
                                            temperature=cfg.sampling.temperature,
                                            completion_width=cfg.sampling.max_new_tokens)
        self._logp = step_lib.make_logprobs(self.graphdef, self.rest, cfg.sampling.temperature)

    # ------------------------------------------------------------------------- checkpoints
    def save(self, *, force: bool = False) -> None:
        meta = {"progress": self.progress.to_dict(), "config": to_dict(self.cfg)}
        self.ckpt.save(self.progress.step, checkpoint_tree(self.state, self.ref_params), meta, force=force)

    def restore(self) -> bool:
        """Apply run.resume: load the newest intact checkpoint (True) or start fresh (False)."""
        mode = self.cfg.run.resume
        if mode == "never" and self.ckpt.steps():
            raise TrainingError(f"run.resume=never but {self.ckpt.directory} already has checkpoints "
                                f"(steps {self.ckpt.steps()}); choose another run.run_dir")
        # Saved runs with a KL term carry the reference policy too.
        abstract = abstract_like(checkpoint_tree(self.state, self.state.params if self.loss_cfg.beta_kl > 0 else None))
        found = self.ckpt.restore_latest(abstract)
        if found is None:
            if mode == "require":
                raise TrainingError(f"run.resume=require but {self.ckpt.directory} has no checkpoint")
            return False
        step, arrays, meta = found
        self.state = arrays["state"]
        self.ref_params = arrays.get("ref")
        self.progress = Progress.from_dict(meta["progress"])
        log.info("resumed from %s at step %d", self.ckpt.directory / str(step), self.progress.step)
        return True

    # ------------------------------------------------------------------------------ model
    def current_model(self):
        """The policy with the current parameters, for sampling (a view, no copy)."""
        from flax import nnx

        return nnx.merge(self.graphdef, self.state.params, self.rest)

    # -------------------------------------------------------------------------------- SFT
    def run_sft(self) -> None:
        """The supervised warm start of the current parameters (optimizer state untouched)."""
        try:
            params = run_sft(self.cfg, self.state.params, graphdef=self.graphdef, rest=self.rest,
                             tokenizer=self.tokenizer, tasks=self.tasks, mesh=self.mesh, run_dir=self.run_dir,
                             max_len=self.model.config.max_position_embeddings, is_main=self.is_main,
                             progress=self.progress_bar, stop=lambda: self._stop_signal is not None)
        except SFTError as e:
            raise TrainingError(str(e)) from None
        if self._stop_signal is None:  # an interrupted SFT is redone by the rerun
            self.state = self.state.replace(params=params)

    # --------------------------------------------------------------------------------- RL
    def _install_signal_handlers(self):
        def handler(signum, _frame):
            log.warning("received signal %d: checkpointing at the end of this step, then exiting", signum)
            self._stop_signal = signum
            for s, h in previous.items():  # a second signal acts at once
                signal.signal(s, h)
        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        return previous

    def _logprobs(self, params, tokens: np.ndarray, accum: int) -> np.ndarray:
        """The training forward's log-probs [N, T] of `tokens` under `params`, in the update's micro-batches."""
        micro = step_lib.split_micro(jnp.asarray(tokens), accum, self.mesh)
        return distributed.to_host(self._logp(params, micro)).reshape(tokens.shape)

    def _pack(self, rows: list[Row], accum: int) -> tuple[LossBatch, np.ndarray | None]:
        """The loss batch of `rows` in `accum` micro-batches, and with sampling.recompute_logprobs
        the |sampler - training forward| log-prob gap of its counted tokens (else None).

        Call before this step's first update: the current parameters are then pi_old's.
        """
        check_completion_window(rows, self.cfg.sampling.max_new_tokens)
        unit = accum * self.shards
        packed = pack_rows(rows, num_rows=bucket_rows(len(rows), unit),
                           max_len=self.model.config.max_position_embeddings)
        old_logp, gap = packed["old_logp"], None
        if self.cfg.sampling.recompute_logprobs:
            old_logp, gap = recomputed_old_logp(old_logp, self._logprobs(self.state.params, packed["tokens"], accum),
                                                packed["completion_mask"])
        # Without a reference model the "kl" metric measures the drift from pi_old instead
        # (beta_kl is 0 then, so it never enters the loss).
        ref_logp = old_logp
        if self.ref_params is not None:
            ref_logp = self._logprobs(self.ref_params, packed["tokens"], accum)
        batch = LossBatch.create(packed["tokens"], packed["completion_mask"], old_logp, packed["advantages"],
                                 packed["stream"], packed["nll_weight"], ref_logp=ref_logp)
        return batch, gap

    def _optimise(self, rows: list[Row], step: int) -> tuple[dict[str, float], int]:
        """minibatches x (accumulated, sharded) updates on one rollout batch; (mean metrics, skipped).

        Each minibatch takes an equal random share of each stream, and each stream is padded to
        its own length: correction rows (which quote the attempt) are longer than first attempts.
        """
        cfg = self.cfg
        mb, accum = cfg.optim.minibatches, cfg.optim.grad_accum
        rng = np.random.default_rng([cfg.run.seed, step, 2])
        shares: list[list[list[Row]]] = [[] for _ in range(mb)]
        for stream in (ORIGINAL, CORRECTION):
            group = [r for r in rows if r.stream == stream]
            order = rng.permutation(len(group)) if mb > 1 else np.arange(len(group))
            for k in range(mb):
                part = [group[i] for i in order[k * len(group) // mb:(k + 1) * len(group) // mb]]
                if part:
                    shares[k].append(part)
        # Every minibatch is packed before the first update changes the parameters (pi_old).
        packed = [[self._pack(g, accum) for g in groups] for groups in shares]
        sums: dict[str, float] = {}
        if cfg.sampling.recompute_logprobs:
            sums.update(logprob_gap_metrics([gap for part in packed for _, gap in part]))
        skipped = 0
        for i, part in enumerate(packed):
            batches = [batch for batch, _ in part]
            norms = loss_normalisers(_concat_rows(batches), self.loss_cfg)
            micro = tuple(step_lib.split_micro(b, accum, self.mesh) for b in batches)
            # The first update takes log pi_old from its own forward (a ratio of exactly 1, bf16
            # included); later ones, after the parameters moved, from the recomputed log-probs.
            at_pi_old = cfg.sampling.recompute_logprobs and i == 0
            self.state, metrics = self._update(self.state, micro, norms, at_pi_old=at_pi_old)
            metrics = {k: float(v) for k, v in metrics.items()}
            skipped += int(metrics.pop("skipped"))
            for name, v in metrics.items():
                sums[name] = sums.get(name, 0.0) + v / mb
        return sums, skipped

    def rl_step(self, worker) -> dict[str, float]:
        cfg = self.cfg
        t_start = time.perf_counter()
        step = self.progress.step
        B = cfg.grpo.num_prompts
        drawn = [B]

        def refill() -> list[Task]:
            extra = task_stream(self.tasks, cfg.tasks.seed, self.progress.cursor + sum(drawn), B)
            drawn.append(B)
            return extra

        tasks = task_stream(self.tasks, cfg.tasks.seed, self.progress.cursor, B)
        ro = worker.collect(self.current_model(), tasks, step_seed=step_seed(cfg.run.seed, step),
                            replay=self.progress.replay, refill=refill)
        t_update = time.perf_counter()
        # Rows outside every loss term (filtered, or zero-variance under dynamic sampling) are not
        # computed at all; the row count is bucketed so the step compiles for few shapes.
        rows = [r for r in ro.rows if r.counted]
        # No row in any loss term: no update at all (Adam's momentum would still move the weights).
        none = (*UPDATE_METRICS, *(GAP_METRICS if cfg.sampling.recompute_logprobs else ()))
        sums, skipped = self._optimise(rows, step) if rows else (dict.fromkeys(none, float("nan")), 0)
        out = dict(ro.metrics)
        out.update(sums)
        out["time_update"] = time.perf_counter() - t_update
        # Positions the update runs forward and backward (padding excluded): a correction row's
        # prompt quotes the attempt, so CIPO trains more tokens than it generates.
        out["trained_tokens"] = float(sum(len(r.prompt) + len(r.completion) for r in rows))
        out["skipped_updates"] = float(skipped)
        for status, count in ro.statuses.items():
            out[f"verify_{status}"] = float(count)
        self.progress.cursor += ro.num_prompts
        self.progress.replay = ro.replay
        self.progress.skipped_total += skipped
        self.progress.bad_steps = self.progress.bad_steps + 1 if skipped == cfg.optim.minibatches else 0
        self.progress.step += 1
        out["step_time"] = time.perf_counter() - t_start
        return out

    def train(self) -> dict[str, Any]:
        from cipo_jax.train.rollout import RolloutWorker
        from cipo_jax.verifiers import VerifierPool

        cfg = self.cfg
        if self.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
        # Handlers first, so a signal during restore, SFT or the first compile also stops cleanly
        # (an interrupted SFT saves nothing: the rerun starts it again).
        previous = self._install_signal_handlers()
        writer = None
        last: dict[str, float] = {}
        try:
            if not self.restore():
                if cfg.sft.steps > 0:
                    self.run_sft()
                if self.loss_cfg.beta_kl > 0:
                    self.ref_params = jax.tree.map(jnp.copy, self.state.params)
                if self._stop_signal is None:
                    self.save(force=True)  # step 0: the starting policy, for eval and resume
            if self.is_main:  # rows past the restored step were never checkpointed: they are redone
                truncate_metrics(self.run_dir / "metrics.jsonl", self.progress.step)
            writer = MetricsWriter(self.run_dir, total_steps=cfg.run.steps, start_step=self.progress.step,
                                   tensorboard=cfg.run.log_tensorboard, is_main=self.is_main,
                                   progress=self.progress_bar)
            with VerifierPool(workers=cfg.run.verify_workers, timeout_s=cfg.run.verify_timeout_s) as pool:
                worker = RolloutWorker(cfg, self.tokenizer, pool, self.mesh)
                while self.progress.step < cfg.run.steps and self._stop_signal is None:
                    last = self.rl_step(worker)
                    writer.write(self.progress.step, last)
                    if self.progress.bad_steps >= cfg.run.max_bad_steps:
                        raise TrainingError(
                            f"{self.progress.bad_steps} consecutive updates had a non-finite loss or gradient; "
                            f"stopping (last good checkpoint: {self.ckpt.directory / str(max(self.ckpt.steps(), default=0))})")
                    if self._stop_signal is not None or self.progress.step % cfg.run.ckpt_every == 0 \
                            or self.progress.step == cfg.run.steps:
                        self.save(force=True)
                    if self._stop_signal is not None:
                        log.warning("stopped by signal %d at step %d; checkpoint saved", self._stop_signal,
                                    self.progress.step)
                        break
        finally:
            if writer is not None:
                writer.close()
            self.ckpt.wait()
            for s, h in previous.items():
                signal.signal(s, h)
        summary = {"step": self.progress.step, "run_dir": str(self.run_dir),
                   "stopped_by_signal": self._stop_signal,
                   "last": {k: clean_value(v) for k, v in last.items()}}
        if self.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary

    def close(self) -> None:
        self.ckpt.close()


def train(cfg: Config, *, progress_bar: bool = True) -> dict[str, Any]:
    trainer = Trainer(cfg, progress_bar=progress_bar)
    try:
        return trainer.train()
    finally:
        trainer.close()
