"""The correction stream on the host (CIPO.md steps 4, 7, 8, 10): which rollouts get corrected,
how correction rewards are shaped and normalised, and how the replay ratio rho adapts.

Plain NumPy; nothing here touches JAX or the model. A reward above SUCCESS_THRESHOLD is a
success [ours: verifiers return {0, 1}; a soft overlong penalty may lower a correct reward a
little without making it a failure].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Literal

import numpy as np
from jaxtyping import Float, Int

from cipo_jax.cipo.groups import normalize_rows
from cipo_jax.config import CIPOConfig, Config

SUCCESS_THRESHOLD = 0.5


def is_success(rewards: np.ndarray) -> np.ndarray:
    return np.asarray(rewards) > SUCCESS_THRESHOLD


# ---------------------------------------------------------------- step 4: select sources
# Priority rules w(p, eta) for `cipo.priority` (the config accepts exactly these keys). "variance"
# is the paper's: medium pass rates first, eta > 0 keeps all-fail and all-pass prompts drawable;
# "uniform" is its ablation: every rollout of a kind is equally likely to be corrected.
PRIORITIES: dict[str, Callable[[Float[np.ndarray, "*B"], float], Float[np.ndarray, "*B"]]] = {
    "variance": lambda p, eta: p * (1.0 - p) + eta,
    "uniform": lambda p, eta: np.ones_like(p),
}


def priority(pass_rate: Float[np.ndarray, "*B"], eta: float, rule: str = "variance") -> Float[np.ndarray, "*B"]:
    """w(p) under `rule` (a PRIORITIES key); by default p (1 - p) + eta."""
    p = np.asarray(pass_rate, np.float64)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"priority: pass rates must lie in [0, 1], got {p}")
    if eta < 0:
        raise ValueError(f"priority: eta must be >= 0, got {eta}")
    if rule not in PRIORITIES:
        raise ValueError(f"priority: unknown rule {rule!r}; known: {', '.join(sorted(PRIORITIES))}")
    return PRIORITIES[rule](p, eta)


def _draw_without_replacement(
    weights: Float[np.ndarray, "K"], k: int, rng: np.random.Generator
) -> Int[np.ndarray, "k"]:
    """k distinct indices by successive sampling: each draw proportional to the weights of the
    items not yet drawn. Gumbel top-k (Efraimidis-Spirakis) has exactly that law. Zero-weight
    items come only after every positive one, uniformly among themselves."""
    positive = weights > 0
    gumbel = rng.gumbel(size=weights.shape)
    keys = np.where(positive, np.log(np.where(positive, weights, 1.0)) + gumbel, gumbel)
    order = np.lexsort((-keys, ~positive))  # primary: positive first; then key descending
    return order[:k]


def stochastic_round(x: float, rng: np.random.Generator) -> int:
    """floor(x) + Bernoulli(x - floor(x)): an integer whose expectation is x."""
    if x < 0:
        raise ValueError(f"stochastic_round: need x >= 0, got {x}")
    lo = int(np.floor(x))
    return lo + int(rng.random() < x - lo)


def select_sources(
    rewards: Float[np.ndarray, "B G"], *, C: int, rho: float, eta: float, rng: np.random.Generator,
    priority_rule: str = "variance",
) -> list[tuple[int, int]]:
    """Up to C rollouts (b, i) to correct: about rho C slots for successes, the rest for failures.

    The success slots are rho C rounded stochastically (floor, plus one with probability equal
    to the fraction), so their expectation is exactly rho C and any rho > 0 keeps observing
    retention: round-half-up gave 0 slots for rho < 1/(2C) and froze the controller there.
    When one kind has too few rollouts its unused slots go to the other,
    so min(C, B G) sources are returned. Within a kind, (b, i) is drawn without replacement with
    probability proportional to w(p_b) of its prompt (`priority_rule`). Order: failures, then successes, each in
    draw order.
    """
    rewards = np.asarray(rewards, np.float64)
    if rewards.ndim != 2:
        raise ValueError(f"select_sources: rewards must be (B, G), got shape {rewards.shape}")
    if not isinstance(C, (int, np.integer)) or C < 0:
        raise ValueError(f"select_sources: C must be an integer >= 0, got {C!r}")
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"select_sources: rho must lie in [0, 1], got {rho}")
    B, G = rewards.shape
    success = is_success(rewards).reshape(-1)  # (B G,)
    pass_rate = is_success(rewards).mean(axis=1)  # (B,)
    weight = np.repeat(priority(pass_rate, eta, priority_rule), G)  # (B G,): w(p_b) for every rollout of b
    succ_idx, fail_idx = np.flatnonzero(success), np.flatnonzero(~success)

    n_succ = min(stochastic_round(rho * C, rng), len(succ_idx))
    n_fail = min(C - n_succ, len(fail_idx))
    n_succ = min(C - n_fail, len(succ_idx))  # failures ran short: successes take their slots
    chosen = np.concatenate([
        fail_idx[_draw_without_replacement(weight[fail_idx], n_fail, rng)],
        succ_idx[_draw_without_replacement(weight[succ_idx], n_succ, rng)],
    ])
    return [(int(j) // G, int(j) % G) for j in chosen]


# ---------------------------------------- steps 7-8: correction advantages, risk shaping
def correction_group_ids(
    sources: list[tuple[int, int]], group_by: Literal["source", "prompt"]
) -> Int[np.ndarray, "S"]:
    """Group of each source: itself (normalise over its M corrections) or its prompt b."""
    if group_by == "source":
        return np.arange(len(sources))
    if group_by == "prompt":
        return np.array([b for b, _ in sources], dtype=np.int64)
    raise ValueError(f"unknown group_by {group_by!r}; known: source, prompt")


def group_normalize(
    values: Float[np.ndarray, "S M"], group_ids: Int[np.ndarray, "S"], *, std_normalize: bool = True,
    eps: float = 1e-6,
) -> Float[np.ndarray, "S M"]:
    """values normalised over all corrections of the sources sharing a group id."""
    values = np.asarray(values, np.float64)
    ids = np.asarray(group_ids)
    if values.ndim != 2 or ids.shape != values.shape[:1]:
        raise ValueError(f"group_normalize: need values (S, M) and group_ids (S,), got {values.shape} and {ids.shape}")
    S, M = values.shape
    if S == 0:
        return values.copy()
    _, group = np.unique(ids, return_inverse=True)  # (S,) dense group index
    count = np.bincount(group)  # sources per group
    order = np.argsort(group, kind="stable")
    slot = np.empty(S, np.int64)  # position of each source inside its group
    slot[order] = np.arange(S) - np.repeat(np.cumsum(count) - count, count)
    # Pack each group into one padded row so the same row normaliser as GRPO applies.
    padded = np.zeros((len(count), count.max(), M))
    present = np.zeros_like(padded)
    padded[group, slot], present[group, slot] = values, 1.0
    adv = normalize_rows(padded.reshape(len(count), -1), present.reshape(len(count), -1),
                         std_normalize=std_normalize, eps=eps)
    return adv.reshape(padded.shape)[group, slot]


def correction_advantages(
    r_corr: Float[np.ndarray, "S M"], r_source: Float[np.ndarray, "S"], group_ids: Int[np.ndarray, "S"], *,
    lambda_risk: float, std_normalize: bool = True, eps: float = 1e-6,
) -> Float[np.ndarray, "S M"]:
    """A' = groupnorm(r') - lambda_risk [source correct and correction wrong] (steps 7-8).

    The penalty comes AFTER normalisation on purpose: all corrections of one source share its
    label, so a penalty added before a per-source z-score is an affine map of r' and cancels
    (a correct source whose M corrections all break would get 0). lambda_risk = 0 is plain
    group normalisation; an all-broken correct source gets -lambda_risk.
    """
    r_corr, r_source = np.asarray(r_corr, np.float64), np.asarray(r_source, np.float64)
    if r_corr.ndim != 2 or r_source.shape != r_corr.shape[:1]:
        raise ValueError(f"correction_advantages: need r_corr (S, M) and r_source (S,), got {r_corr.shape} "
                         f"and {r_source.shape}")
    if lambda_risk < 0:
        raise ValueError(f"correction_advantages: lambda_risk must be >= 0, got {lambda_risk}")
    broke = is_success(r_source)[:, None] & ~is_success(r_corr)  # (S, M)
    return group_normalize(r_corr, group_ids, std_normalize=std_normalize, eps=eps) - lambda_risk * broke


def nll_weights(r_corr: Float[np.ndarray, "S M"], r_source: Float[np.ndarray, "S"]) -> Float[np.ndarray, "S M"]:
    """1 for a correction that turned a failed source into a success (the L_nll rows), else 0."""
    r_source = np.asarray(r_source)
    return (~is_success(r_source)[:, None] & is_success(r_corr)).astype(np.float64)


# --------------------------------------------------------------- step 10: replay ratio
def retention_counts(r_corr: Float[np.ndarray, "S M"], r_source: Float[np.ndarray, "S"]) -> tuple[int, int]:
    """(corrections of successful sources that stay correct, corrections of successful sources)."""
    from_success = np.broadcast_to(is_success(r_source)[:, None], np.shape(r_corr))
    return int(np.sum(from_success & is_success(r_corr))), int(np.sum(from_success))


@dataclass(frozen=True)
class ReplayState:
    """rho_t and the retention EMA (None until the first observation); plain floats to checkpoint."""

    rho: float
    kappa_ema: float | None = None

    @classmethod
    def initial(cls, cfg: CIPOConfig | Config) -> "ReplayState":
        return cls(rho=float(_cipo(cfg).rho_init))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ReplayState":
        unknown = set(d) - {"rho", "kappa_ema"}
        if unknown or "rho" not in d:
            raise ValueError(f"ReplayState.from_dict: expected keys rho, kappa_ema; got {sorted(d)}")
        ema = d.get("kappa_ema")
        return cls(rho=float(d["rho"]), kappa_ema=None if ema is None else float(ema))


def _cipo(cfg: CIPOConfig | Config) -> CIPOConfig:
    return cfg.cipo if isinstance(cfg, Config) else cfg


def update_replay(
    state: ReplayState, kept_correct: int, total_from_successes: int, cfg: CIPOConfig | Config
) -> ReplayState:
    """kappa_t = kept / total, smoothed by an EMA (decay retention_ema; the first observation
    initialises it); rho_{t+1} = clip(rho_t + eta_rho (kappa* - kappa_ema), rho_min, rho_max).
    No corrections of successful sources this step: nothing observed, state unchanged."""
    c = _cipo(cfg)
    if not 0 <= kept_correct <= total_from_successes:
        raise ValueError(f"update_replay: need 0 <= kept_correct <= total, got {kept_correct} and {total_from_successes}")
    if total_from_successes == 0:
        return state
    kappa = kept_correct / total_from_successes
    ema = kappa if state.kappa_ema is None else c.retention_ema * state.kappa_ema + (1 - c.retention_ema) * kappa
    rho = min(max(state.rho + c.eta_rho * (c.kappa_star - ema), c.rho_min), c.rho_max)
    return ReplayState(rho=float(rho), kappa_ema=float(ema))


def correction_metrics(
    r_corr: Float[np.ndarray, "S M"], r_source: Float[np.ndarray, "S"], state: ReplayState
) -> dict[str, float]:
    """Per-step diagnostics; `state` is the one this step's sources were selected with.
    Undefined rates (nothing to count) are NaN."""
    r_corr = np.asarray(r_corr, np.float64)
    kept, total = retention_counts(r_corr, r_source)
    failed = ~is_success(np.asarray(r_source))
    fixes = nll_weights(r_corr, r_source)
    return {
        "corr_count": float(r_corr.size),
        "corr_success": float(is_success(r_corr).mean()) if r_corr.size else float("nan"),
        "corr_fix_rate": float(fixes.sum() / (failed.sum() * r_corr.shape[1])) if failed.any() else float("nan"),
        "retention": kept / total if total else float("nan"),
        "retention_ema": float("nan") if state.kappa_ema is None else state.kappa_ema,
        "replay_ratio": state.rho,
    }
