"""One rollout batch (CIPO.md steps 1-8): sample G attempts per prompt, verify, compute GRPO
advantages, pick correction sources, sample M corrections of each, verify, shape, normalise.

The result is a list of `Row`s for the loss plus the step's diagnostics. With C = 0 the
correction half does nothing and this is plain GRPO (DAPO options included).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from cipo_jax import distributed
from cipo_jax.cipo import correction as corr
from cipo_jax.cipo.loss import CORRECTION, ORIGINAL, grpo_advantages
from cipo_jax.config import Config
from cipo_jax.data.correction import render_correction, render_prompt
from cipo_jax.data.tasks import Task
from cipo_jax.data.tokenizer import Tokenizer
from cipo_jax.sampling import SampleResult, generate
from cipo_jax.train.batch import Row
from cipo_jax.verifiers.table import STATUSES


@dataclass
class Rollouts:
    rows: list[Row]
    metrics: dict[str, float]
    replay: corr.ReplayState
    statuses: dict[str, int] = field(default_factory=dict)
    num_prompts: int = 0  # prompts drawn, refills included


def completion_text(tokens: list[int], tokenizer: Tokenizer, finish: str) -> str:
    """The attempt as text, without its stop token."""
    body = tokens[:-1] if finish == "stop" and tokens else tokens
    return tokenizer.decode(body)


def overlong_penalty(length: int, max_new: int, buffer: int) -> float:
    """DAPO soft overlong punishment: 0 until max_new - buffer tokens, then linear down to -1."""
    start = max_new - buffer
    if buffer <= 0 or length <= start:
        return 0.0
    return -min(1.0, (length - start) / buffer)


class RolloutWorker:
    """Holds what sampling and scoring need across steps: tokenizer, verifier pool, mesh."""

    def __init__(self, cfg: Config, tokenizer: Tokenizer, pool, mesh=None):
        self.cfg, self.tokenizer, self.pool, self.mesh = cfg, tokenizer, pool, mesh
        self.stop_tokens = tuple(sorted({tokenizer.eos_id}))

    def _sample(self, model, prompts: list[list[int]], n: int, seed: int) -> tuple[SampleResult, float]:
        s = self.cfg.sampling
        t0 = time.perf_counter()
        res = generate(model, prompts, max_new_tokens=s.max_new_tokens, n=n, temperature=s.temperature,
                       top_k=s.top_k, top_p=s.top_p, stop_tokens=self.stop_tokens, seed=seed, mesh=self.mesh)
        return res, time.perf_counter() - t0

    def _score(self, tasks: list[Task], texts: list[str]) -> tuple[np.ndarray, list[str]]:
        """Rewards and statuses of all items; with several processes each verifies its share."""
        share = distributed.my_share(len(texts))
        verdicts = self.pool.score_batch([(tasks[i].verifier, texts[i], tasks[i].reference, tasks[i].meta)
                                          for i in share])
        mine = np.array([(v.reward, STATUSES.index(v.status)) for v in verdicts], np.float64).reshape(-1, 2)
        both = distributed.combine_shares(mine, len(texts))
        return both[:, 0], [STATUSES[int(s)] for s in both[:, 1]]

    def _attempts(self, model, tasks: list[Task], seed: int, timings: dict, statuses: dict):
        """Steps 1-2 for `tasks`: prompts, G samples each, their texts and verified rewards [B, G]."""
        G = self.cfg.grpo.group_size
        prompts = [render_prompt(t, self.tokenizer, chat=self.cfg.tasks.chat) for t in tasks]
        res, dt = self._sample(model, prompts, G, seed=seed)
        timings["time_sample"] += dt
        texts = [completion_text(toks, self.tokenizer, fin) for toks, fin in zip(res.tokens, res.finish_reason)]
        t0 = time.perf_counter()
        flat, st = self._score([tasks[i] for i in res.prompt_index], texts)
        timings["time_verify"] += time.perf_counter() - t0
        for s in st:
            statuses[s] = statuses.get(s, 0) + 1
        return prompts, res, texts, flat.reshape(len(tasks), G)

    def collect(self, model, tasks: list[Task], *, step_seed: int, replay: corr.ReplayState,
                refill: Callable[[], list[Task]] | None = None) -> Rollouts:
        """One rollout batch. `refill` supplies more prompts for DAPO dynamic sampling."""
        cfg, tok = self.cfg, self.tokenizer
        G, M = cfg.grpo.group_size, cfg.cipo.M
        timings = {"time_sample": 0.0, "time_verify": 0.0}
        statuses: dict[str, int] = {}

        # Steps 1-2: G attempts per prompt, verified on the host.
        prompts, res, texts, rewards = self._attempts(model, tasks, step_seed, timings, statuses)
        tokens, logprobs, finish = res.tokens, res.logprobs, res.finish_reason
        # DAPO dynamic sampling: draw more prompts until B groups carry signal (reward variance).
        rounds = 0
        while (cfg.grpo.dynamic_sampling and refill is not None and rounds < cfg.grpo.max_refill_rounds
               and int((np.ptp(rewards, axis=1) > 0).sum()) < cfg.grpo.num_prompts):
            rounds += 1
            extra = refill()
            p2, r2, t2, rw2 = self._attempts(model, extra, step_seed + 7_777 * rounds, timings, statuses)
            tasks, prompts, texts = tasks + extra, prompts + p2, texts + t2
            tokens, logprobs, finish = tokens + r2.tokens, logprobs + r2.logprobs, finish + r2.finish_reason
            rewards = np.concatenate([rewards, rw2])
        B = len(tasks)
        lengths = np.array([len(t) for t in tokens]).reshape(B, G)
        truncated = np.array([f == "length" for f in finish]).reshape(B, G)

        # DAPO overlong handling shapes the reward the policy gradient sees, not the verdict.
        pg_rewards = rewards.copy()
        counted = np.ones((B, G), bool)
        if cfg.grpo.overlong == "soft":
            pg_rewards += np.vectorize(overlong_penalty)(lengths, cfg.sampling.max_new_tokens, cfg.grpo.overlong_buffer)
        elif cfg.grpo.overlong == "filter":
            counted &= ~truncated

        # Step 3: group-normalised advantages. With dynamic sampling, zero-variance groups leave
        # the policy-gradient stream (it keeps the first B with signal); every group can still
        # be a correction source.
        adv = np.asarray(grpo_advantages(pg_rewards, std_normalize=cfg.grpo.std_normalize, eps=cfg.grpo.adv_eps))
        zero_var = np.ptp(pg_rewards, axis=1) == 0
        if cfg.grpo.dynamic_sampling:
            keep = ~zero_var & (np.cumsum(~zero_var) <= cfg.grpo.num_prompts)
            counted &= keep[:, None]

        rows = [Row(prompt=prompts[i // G], completion=tokens[i], logprobs=logprobs[i],
                    advantage=float(adv.flat[i]), stream=ORIGINAL, counted=bool(counted.flat[i]))
                for i in range(B * G)]
        metrics = {
            "reward_mean": float(rewards.mean()),
            "pass_rate_mean": float((rewards > corr.SUCCESS_THRESHOLD).mean()),
            "zero_var_frac": float(zero_var.mean()),
            "response_len": float(lengths.mean()),
            "truncated_frac": float(truncated.mean()),
            "refill_rounds": float(rounds),
        }
        gen_tokens = int(lengths.sum())

        # Steps 4-8: the correction stream.
        rng = np.random.default_rng([cfg.run.seed, step_seed, 1])
        sources = corr.select_sources(rewards, C=cfg.cipo.C, rho=replay.rho, eta=cfg.cipo.eta, rng=rng)
        if sources:
            src_flat = [b * G + i for b, i in sources]
            c_prompts = [render_correction(tasks[b], texts[j], tok, chat=cfg.tasks.chat, template=cfg.cipo.template)
                         for (b, _), j in zip(sources, src_flat)]
            c_res, dt = self._sample(model, c_prompts, M, seed=step_seed + 1_000_003)
            timings["time_sample"] += dt
            c_texts = [completion_text(t, tok, f) for t, f in zip(c_res.tokens, c_res.finish_reason)]
            t0 = time.perf_counter()
            c_flat, st = self._score([tasks[sources[k][0]] for k in c_res.prompt_index], c_texts)
            timings["time_verify"] += time.perf_counter() - t0
            for s in st:
                statuses[s] = statuses.get(s, 0) + 1
            S = len(sources)
            r_corr = c_flat.reshape(S, M)
            r_src = np.array([rewards[b, i] for b, i in sources])
            groups = corr.correction_group_ids(sources, cfg.cipo.group_by)
            c_adv = corr.correction_advantages(r_corr, r_src, groups, lambda_risk=cfg.cipo.lambda_risk,
                                               std_normalize=cfg.grpo.std_normalize, eps=cfg.grpo.adv_eps)
            nll_w = corr.nll_weights(r_corr, r_src)
            rows += [Row(prompt=c_prompts[k // M], completion=c_res.tokens[k], logprobs=c_res.logprobs[k],
                         advantage=float(c_adv.flat[k]), stream=CORRECTION, nll_weight=float(nll_w.flat[k]))
                     for k in range(S * M)]
            metrics.update(corr.correction_metrics(r_corr, r_src, replay))
            kept, total = corr.retention_counts(r_corr, r_src)
            new_replay = corr.update_replay(replay, kept, total, cfg)
            gen_tokens += sum(len(t) for t in c_res.tokens)
        else:
            metrics.update({"corr_count": 0.0, "corr_success": float("nan"), "corr_fix_rate": float("nan"),
                            "retention": float("nan"), "replay_ratio": replay.rho,
                            "retention_ema": float("nan") if replay.kappa_ema is None else replay.kappa_ema})
            new_replay = replay
        metrics.update(timings)
        metrics["tokens"] = float(gen_tokens)
        metrics["rollout_tokens_per_s"] = gen_tokens / max(timings["time_sample"], 1e-9)
        return Rollouts(rows=rows, metrics=metrics, replay=new_replay, statuses=statuses, num_prompts=B)
