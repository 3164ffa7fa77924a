"""The host side of one CIPO step (CIPO.md steps 1-8) as one function, `collect`.

    1-2  sample G attempts per prompt, verify them                      r  (B, G)
    3    GRPO advantages, group-normalised per prompt                    A  (B, G)
    4    pick up to C correction sources (failures, and rho of successes)
    5    build each source's correction prompt c = T(x, y)               (cipo/template.py)
         (cipo.construction=prefix: c = x + the first part of y's tokens, continued by the model)
    6    sample M corrections per source, verify them                    r' (S, M)
    7-8  correction advantages with the risk penalty                     A' (S, M)
    10   move the replay ratio rho toward the target retention

The sampler and the verifier come in as functions, so this file knows no model, no tokenizer
and no JAX; its tests pass fakes that return chosen verdicts. With C = 0 the correction half
does nothing and this is GRPO on the same path (DAPO dynamic sampling and overlong handling
included). The loss that consumes the rows is `cipo/loss.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from jaxtyping import Float

from cipo_jax.cipo import correction as corr
from cipo_jax.cipo.groups import normalize_rows
from cipo_jax.cipo.template import Request
from cipo_jax.config import Config
from cipo_jax.data.tasks import Task

ORIGINAL, CORRECTION = 0, 1  # the two streams of rows (Row.stream, LossBatch.stream)

# Sampler seed offsets of the step's calls: refill round k of dynamic sampling adds k x REFILL.
REFILL_SEED, CORRECTION_SEED = 7_777, 1_000_003


@dataclass(frozen=True)
class Samples:
    """n completions per request, request-major: rows [i n, (i + 1) n) continue prompts[i]."""

    prompts: list[list[int]]  # token ids of each request's rendered prompt
    tokens: list[list[int]]  # completion ids (stop token included when it ended the row)
    logprobs: list[list[float]]  # log pi_old of each completion token
    finish: list[str]  # "stop" or "length"
    texts: list[str]  # completions as text, without the stop token


# (requests, n, seed offset) -> Samples. The offset separates the step's sampler calls.
SampleFn = Callable[[list[Request], int, int], Samples]
# (tasks, completion texts) -> (rewards (K,), verifier statuses (K,)), item k scored against tasks[k].
ScoreFn = Callable[[list[Task], list[str]], tuple[np.ndarray, list[str]]]
# (tasks, completion texts) -> why each failed (the verifier's detail), for execution feedback.
ExplainFn = Callable[[list[Task], list[str]], list[str]]


@dataclass(frozen=True)
class Row:
    """One (prompt, completion) row of the loss batch."""

    prompt: list[int]
    completion: list[int]
    logprobs: list[float]
    advantage: float = 0.0
    stream: int = ORIGINAL
    nll_weight: float = 0.0  # 1 for a successful correction of a failed source (the L_nll rows)
    counted: bool = True  # False drops the row from every loss term (e.g. overlong filtering)


@dataclass
class Rollouts:
    rows: list[Row]
    metrics: dict[str, float]
    replay: corr.ReplayState  # rho and the retention EMA after this step
    statuses: dict[str, int] = field(default_factory=dict)  # verifier status -> count
    num_prompts: int = 0  # prompts drawn, refills included


# ------------------------------------------------------------------------- step 3: advantages
def grpo_advantages(
    rewards: Float[np.ndarray, "B G"], *, std_normalize: bool = True, eps: float = 1e-6
) -> Float[np.ndarray, "B G"]:
    """A_{b,i} = (r_{b,i} - mean_b) / (std_b + eps), population std; std_normalize=False is Dr.GRPO."""
    rewards = np.asarray(rewards, np.float32)
    if rewards.ndim != 2:
        raise ValueError(f"grpo_advantages: rewards must be (B, G), got shape {rewards.shape}")
    # float32 like the loss that consumes them, so a row's advantage is the same on any path.
    return normalize_rows(rewards, std_normalize=std_normalize, eps=np.float32(eps))


def overlong_penalty(length: int, max_new: int, buffer: int) -> float:
    """DAPO soft overlong punishment: 0 until max_new - buffer tokens, then linear down to -1."""
    start = max_new - buffer
    if buffer <= 0 or length <= start:
        return 0.0
    return -min(1.0, (length - start) / buffer)


def prefix_cut(tokens: list[int], finish: str, fraction: float) -> list[int]:
    """The kept start of an attempt: the first floor(fraction x length) tokens of its body (the
    stop token never counts as part of the attempt)."""
    body = tokens[:-1] if finish == "stop" and tokens else tokens
    return list(body[: int(fraction * len(body))])


def _count(statuses: dict[str, int], new: list[str]) -> None:
    for s in new:
        statuses[s] = statuses.get(s, 0) + 1


# ------------------------------------------------------------------------------ one step
def collect(
    sample_fn: SampleFn,
    score_fn: ScoreFn,
    tasks: list[Task],
    cfg: Config,
    replay: corr.ReplayState,
    rng: np.random.Generator,
    *,
    refill: Callable[[], list[Task]] | None = None,
    explain_fn: ExplainFn | None = None,
) -> Rollouts:
    """One rollout batch: rows for the loss, the step's diagnostics and the next replay state.

    `rng` draws the correction sources; `refill` supplies more prompts for DAPO dynamic sampling;
    `explain_fn` gives the failed sources' execution feedback when cfg.cipo.feedback is on.
    """
    G, M = cfg.grpo.group_size, cfg.cipo.M
    if cfg.cipo.feedback and cfg.cipo.C > 0 and explain_fn is None:
        raise ValueError("cipo.feedback needs an explain_fn (the verifier's reason for each failed source)")
    statuses: dict[str, int] = {}

    def attempts(batch: list[Task], seed_offset: int) -> tuple[Samples, np.ndarray]:
        """Steps 1-2: G verified attempts per task; rewards (len(batch), G)."""
        got = sample_fn([Request(t) for t in batch], G, seed_offset)
        rewards, st = score_fn([t for t in batch for _ in range(G)], got.texts)
        _count(statuses, st)
        return got, np.asarray(rewards, np.float64).reshape(len(batch), G)

    s, rewards = attempts(tasks, 0)
    prompts, tokens, logprobs, finish, texts = s.prompts, s.tokens, s.logprobs, s.finish, s.texts
    # DAPO dynamic sampling: draw more prompts until B groups carry signal (reward variance).
    rounds = 0
    while (cfg.grpo.dynamic_sampling and refill is not None and rounds < cfg.grpo.max_refill_rounds
           and int((np.ptp(rewards, axis=1) > 0).sum()) < cfg.grpo.num_prompts):
        rounds += 1
        extra = refill()
        more, more_rewards = attempts(extra, REFILL_SEED * rounds)
        tasks, prompts, texts = tasks + extra, prompts + more.prompts, texts + more.texts
        tokens, logprobs, finish = tokens + more.tokens, logprobs + more.logprobs, finish + more.finish
        rewards = np.concatenate([rewards, more_rewards])
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

    # Step 3. With dynamic sampling, zero-variance groups leave the policy-gradient stream (it
    # keeps the first B with signal); every group can still be a correction source.
    adv = grpo_advantages(pg_rewards, std_normalize=cfg.grpo.std_normalize, eps=cfg.grpo.adv_eps)
    zero_var = np.ptp(pg_rewards, axis=1) == 0
    if cfg.grpo.dynamic_sampling:
        keep = ~zero_var & (np.cumsum(~zero_var) <= cfg.grpo.num_prompts)
        counted &= keep[:, None]

    rows = [Row(prompt=prompts[i // G], completion=tokens[i], logprobs=logprobs[i],
                advantage=float(adv.flat[i]), stream=ORIGINAL, counted=bool(counted.flat[i]))
            for i in range(B * G)]
    metrics = {
        "reward_mean": float(rewards.mean()),
        "pass_rate_mean": float(corr.is_success(rewards).mean()),
        "zero_var_frac": float(zero_var.mean()),
        "response_len": float(lengths.mean()),
        "truncated_frac": float(truncated.mean()),
        "refill_rounds": float(rounds),
    }
    gen_tokens = int(lengths.sum())

    # Steps 4-8: the correction stream.
    sources = corr.select_sources(rewards, C=cfg.cipo.C, rho=replay.rho, eta=cfg.cipo.eta, rng=rng,
                                 priority_rule=cfg.cipo.priority)
    new_replay = replay
    if sources:
        S = len(sources)
        c = sample_fn(_correction_requests(sources, tasks, tokens, finish, texts, rewards, cfg, explain_fn),
                      M, CORRECTION_SEED)
        c_rewards, st = score_fn([tasks[b] for b, _ in sources for _ in range(M)], c.texts)
        _count(statuses, st)
        r_corr = np.asarray(c_rewards, np.float64).reshape(S, M)
        r_src = np.array([rewards[b, i] for b, i in sources])
        c_adv = corr.correction_advantages(
            r_corr, r_src, corr.correction_group_ids(sources, cfg.cipo.group_by), lambda_risk=cfg.cipo.lambda_risk,
            std_normalize=cfg.grpo.std_normalize, eps=cfg.grpo.adv_eps)
        nll_w = corr.nll_weights(r_corr, r_src)
        rows += [Row(prompt=c.prompts[k // M], completion=c.tokens[k], logprobs=c.logprobs[k],
                     advantage=float(c_adv.flat[k]), stream=CORRECTION, nll_weight=float(nll_w.flat[k]))
                 for k in range(S * M)]
        metrics.update(corr.correction_metrics(r_corr, r_src, replay))
        # Step 10: the replay ratio follows retention.
        new_replay = corr.update_replay(replay, *corr.retention_counts(r_corr, r_src), cfg)
        gen_tokens += sum(len(t) for t in c.tokens)
    else:
        metrics.update({"corr_count": 0.0, "corr_success": float("nan"), "corr_fix_rate": float("nan"),
                        "retention": float("nan"), "replay_ratio": replay.rho,
                        "retention_ema": float("nan") if replay.kappa_ema is None else replay.kappa_ema})
    metrics["tokens"] = float(gen_tokens)
    return Rollouts(rows=rows, metrics=metrics, replay=new_replay, statuses=statuses, num_prompts=B)


def _correction_requests(sources, tasks, tokens, finish, texts, rewards, cfg: Config,
                         explain_fn: ExplainFn | None) -> list[Request]:
    """Step 5: one request per source (b, i), by the configured construction."""
    G = cfg.grpo.group_size
    if cfg.cipo.construction == "prefix":
        return [Request(tasks[b], prefix=tuple(prefix_cut(tokens[b * G + i], finish[b * G + i], cfg.cipo.prefix_fraction)))
                for b, i in sources]
    feedback = [""] * len(sources)
    if cfg.cipo.feedback:
        failed = [k for k, (b, i) in enumerate(sources) if not corr.is_success(rewards[b, i])]
        if failed:
            why = explain_fn([tasks[sources[k][0]] for k in failed],
                             [texts[sources[k][0] * G + sources[k][1]] for k in failed])
            for k, reason in zip(failed, why):
                feedback[k] = reason
    return [Request(tasks[b], attempt=texts[b * G + i], feedback=f) for (b, i), f in zip(sources, feedback)]
