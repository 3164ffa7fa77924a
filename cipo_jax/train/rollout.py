"""The glue between the CIPO step (`cipo/step.py`) and the real sampler and verifier pool.

`sample` renders requests with the tokenizer and runs the jitted sampler; `score` runs the
verifier pool (each process verifying its share in a multi-process run). Evaluation uses the
same two helpers, so it sees exactly what training saw. `RolloutWorker` times them and hands
them to `cipo.step.collect`.
"""

from __future__ import annotations

import time

import numpy as np

from cipo_jax import distributed
from cipo_jax.cipo import step as cipo_step
from cipo_jax.cipo.correction import ReplayState
from cipo_jax.cipo.step import Rollouts, Samples
from cipo_jax.cipo.template import Request, render
from cipo_jax.config import Config
from cipo_jax.data.tasks import Task
from cipo_jax.data.tokenizer import Tokenizer
from cipo_jax.sampling import generate
from cipo_jax.verifiers.table import STATUSES, Item


def completion_text(tokens: list[int], tokenizer: Tokenizer, finish: str) -> str:
    """The attempt as text, without its stop token."""
    body = tokens[:-1] if finish == "stop" and tokens else tokens
    return tokenizer.decode(body)


def sample(model, tokenizer: Tokenizer, requests: list[Request], n: int, *, chat: bool, template: str,
           max_new_tokens: int, temperature: float, seed: int, top_k: int | None = None,
           top_p: float | None = None, mesh=None, weight_dtype: str | None = None) -> Samples:
    """n completions per request from the policy, request-major, with their texts (a continuation's
    text starts with its request's prefix: the whole answer the verifier judges)."""
    prompts = [render(r, tokenizer, chat=chat, template=template) for r in requests]
    res = generate(model, prompts, max_new_tokens=max_new_tokens, n=n, temperature=temperature, top_k=top_k,
                   top_p=top_p, stop_tokens=(tokenizer.eos_id,), seed=seed, mesh=mesh, weight_dtype=weight_dtype)
    prefixes = [list(requests[k // n].prefix or ()) for k in range(len(res.tokens))]
    texts = [completion_text(p + t, tokenizer, f) for p, t, f in zip(prefixes, res.tokens, res.finish_reason)]
    return Samples(prompts=prompts, tokens=res.tokens, logprobs=res.logprobs, finish=res.finish_reason, texts=texts)


def score(pool, tasks: list[Task], texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """Rewards and statuses of text k against tasks[k]; with several processes each verifies its share."""
    share = distributed.my_share(len(texts))
    verdicts = pool.score_batch([Item(tasks[i].verifier, texts[i], tasks[i].reference, tasks[i].meta) for i in share])
    mine = np.array([(v.reward, STATUSES.index(v.status)) for v in verdicts], np.float64).reshape(-1, 2)
    both = distributed.combine_shares(mine, len(texts))
    return both[:, 0], [STATUSES[int(s)] for s in both[:, 1]]


FEEDBACK_BYTES = 512  # execution feedback kept per item (UTF-8, cut at a character boundary)


def explain(pool, tasks: list[Task], texts: list[str]) -> list[str]:
    """Why text k fails tasks[k]: the verifier's detail (else its status), for execution feedback.
    Every process gets every reason, so all build the same correction prompts."""
    share = distributed.my_share(len(texts))
    verdicts = pool.score_batch([Item(tasks[i].verifier, texts[i], tasks[i].reference, tasks[i].meta) for i in share])
    mine = np.array([(v.detail or v.status).encode()[:FEEDBACK_BYTES] for v in verdicts], f"S{FEEDBACK_BYTES}")
    return [r.decode("utf-8", "ignore") for r in distributed.combine_shares(mine, len(texts))]


class RolloutWorker:
    """What sampling and scoring need across steps (tokenizer, verifier pool, mesh), plus timings."""

    def __init__(self, cfg: Config, tokenizer: Tokenizer, pool, mesh=None):
        self.cfg, self.tokenizer, self.pool, self.mesh = cfg, tokenizer, pool, mesh

    def score(self, tasks: list[Task], texts: list[str]) -> tuple[np.ndarray, list[str]]:
        return score(self.pool, tasks, texts)

    def collect(self, model, tasks: list[Task], *, step_seed: int, replay: ReplayState,
                refill=None) -> Rollouts:
        """One rollout batch (`cipo.step.collect`) with the sampling and verification times."""
        cfg, s = self.cfg, self.cfg.sampling
        timings = {"time_sample": 0.0, "time_verify": 0.0, "verify_items": 0.0}

        def timed(phase: str, fn, *args):
            t0 = time.perf_counter()
            out = fn(*args)
            timings[phase] += time.perf_counter() - t0
            return out

        def sample_fn(requests: list[Request], n: int, seed_offset: int) -> Samples:
            return timed("time_sample", lambda: sample(
                model, self.tokenizer, requests, n, chat=cfg.tasks.chat, template=cfg.cipo.template,
                max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                seed=step_seed + seed_offset, mesh=self.mesh, weight_dtype=s.weight_dtype))

        def score_fn(batch: list[Task], texts: list[str]) -> tuple[np.ndarray, list[str]]:
            timings["verify_items"] += len(texts)
            return timed("time_verify", self.score, batch, texts)

        def explain_fn(batch: list[Task], texts: list[str]) -> list[str]:
            timings["verify_items"] += len(texts)
            return timed("time_verify", explain, self.pool, batch, texts)

        rng = np.random.default_rng([cfg.run.seed, step_seed, 1])
        ro = cipo_step.collect(sample_fn, score_fn, tasks, cfg, replay, rng, refill=refill, explain_fn=explain_fn)
        ro.metrics.update(timings)
        ro.metrics["rollout_tokens_per_s"] = ro.metrics["tokens"] / max(timings["time_sample"], 1e-9)
        # verifier throughput (sandbox runs/s for code tasks), this process's pool on all items
        ro.metrics["verify_items_per_s"] = timings["verify_items"] / max(timings["time_verify"], 1e-9)
        return ro
