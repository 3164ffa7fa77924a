"""An independent float64 NumPy re-implementation of the CIPO maths, written from CIPO.md with
plain loops (one row, one token at a time). It never imports cipo_jax: tests compare the JAX
code against it.

Conventions it shares with the implementation because CIPO.md/docs/cipo.md fix them:
population std in group normalisation; logits[t-1] predicts token t; KL, entropy and clip
fraction are token means over the rows of the streams that are trained (the correction stream
only when alpha_corr or gamma_nll is non-zero).
"""

from __future__ import annotations

import math

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    m = max(x)
    return x - (m + math.log(sum(math.exp(v - m) for v in x)))


def token_logprobs(logits: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    N, T, _ = logits.shape
    logp, entropy = np.zeros((N, T)), np.zeros((N, T))
    for n in range(N):
        for t in range(1, T):
            ls = log_softmax(logits[n, t - 1])
            logp[n, t] = ls[tokens[n, t]]
            entropy[n, t] = -sum(math.exp(v) * v for v in ls)
    return logp, entropy


def normalize_group(values: list[float], std_normalize: bool, eps: float) -> list[float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [(v - mean) / (std + eps) if std_normalize else v - mean for v in values]


def grpo_advantages(rewards, std_normalize=True, eps=1e-6) -> np.ndarray:
    return np.array([normalize_group(list(row), std_normalize, eps) for row in np.asarray(rewards, float)])


def correction_advantages(r_corr, r_source, group_ids, lambda_risk, std_normalize=True, eps=1e-6) -> np.ndarray:
    """CIPO.md step 8: normalise the raw verdicts over each group, then subtract lambda_risk from
    every wrong correction of a correct source."""
    r_corr = np.asarray(r_corr, float)
    out = np.zeros_like(r_corr)
    for g in set(int(x) for x in group_ids):
        members = [s for s in range(len(group_ids)) if group_ids[s] == g]
        cells = [(s, j) for s in members for j in range(r_corr.shape[1])]
        normed = normalize_group([r_corr[s, j] for s, j in cells], std_normalize, eps)
        for k, (s, j) in enumerate(cells):
            broke = r_source[s] > 0.5 and r_corr[s, j] <= 0.5
            out[s, j] = normed[k] - (lambda_risk if broke else 0.0)
    return out


def _aggregate(per_row: list[list[float]], mode: str) -> float:
    """per_row: the token values of each row that has at least one counted token."""
    rows = [r for r in per_row if r]
    if not rows:
        return 0.0
    if mode == "token-mean":
        return sum(sum(r) for r in rows) / sum(len(r) for r in rows)
    if mode == "seq-mean-token-mean":
        return sum(sum(r) / len(r) for r in rows) / len(rows)
    if mode == "seq-mean-token-sum":
        return sum(sum(r) for r in rows) / len(rows)
    raise ValueError(mode)


def _token_mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def cipo_loss(logp, entropy, batch: dict, cfg: dict) -> tuple[float, dict]:
    """batch: tokens, completion_mask, old_logp, ref_logp, advantages, stream, nll_weight.
    cfg: eps_low, eps_high, aggregation, alpha_corr, gamma_nll, beta_kl, kl_estimator."""
    mask = batch["completion_mask"]
    N, T = mask.shape
    trains_corr = cfg["alpha_corr"] != 0 or cfg["gamma_nll"] != 0
    pg_rows = {0: [], 1: []}
    nll_tokens, kl_tokens, ent_tokens, clipped_tokens = [], [], [], []
    for n in range(N):
        stream, A = int(batch["stream"][n]), float(batch["advantages"][n])
        surrogate = []
        for t in range(T):
            if mask[n, t] == 0:
                continue
            r = math.exp(logp[n, t] - batch["old_logp"][n, t])
            r_clip = min(max(r, 1 - cfg["eps_low"]), 1 + cfg["eps_high"])
            surrogate.append(-min(r * A, r_clip * A))
            if stream == 1 and batch["nll_weight"][n] > 0:
                nll_tokens.append(-logp[n, t])
            if stream == 0 or trains_corr:
                d = batch["ref_logp"][n, t] - logp[n, t]  # log pi_ref / pi_theta
                kl_tokens.append(-d if cfg["kl_estimator"] == "k1" else math.exp(d) - d - 1)
                ent_tokens.append(entropy[n, t])
                clipped_tokens.append(1.0 if r_clip * A < r * A else 0.0)
        pg_rows[stream].append(surrogate)
    metrics = {
        "loss_pg": _aggregate(pg_rows[0], cfg["aggregation"]),
        "loss_corr": _aggregate(pg_rows[1], cfg["aggregation"]),
        "loss_nll": _token_mean(nll_tokens),
        "kl": _token_mean(kl_tokens),
        "entropy": _token_mean(ent_tokens),
        "clip_frac": _token_mean(clipped_tokens),
    }
    loss = (metrics["loss_pg"] + cfg["alpha_corr"] * metrics["loss_corr"]
            + cfg["gamma_nll"] * metrics["loss_nll"] + cfg["beta_kl"] * metrics["kl"])
    metrics["loss"] = loss
    return loss, metrics


def sft_loss(logp, completion_mask) -> float:
    return _token_mean([-logp[n, t] for n, t in zip(*np.nonzero(completion_mask))])


def finite_difference_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f at x, in float64."""
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        up = f(x)
        x[idx] = old - h
        down = f(x)
        x[idx] = old
        grad[idx] = (up - down) / (2 * h)
    return grad
