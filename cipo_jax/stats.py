"""Error bars for evaluation: standard errors over problems and paired bootstrap intervals.

Every accuracy is a mean over problems of a per-problem value (a pass@k estimate, a 0/1
verdict), so its standard error is the sample standard deviation over problems / sqrt(P).
A before/after or arm-vs-arm claim is paired: both sides see the same problems, so the
interval comes from resampling the per-problem DIFFERENCES (with replacement, percentile
bootstrap).

With several seeds the design is CROSSED: every seed is evaluated on the same held-out problems,
so the differences form a (seeds, problems) table d[s, p] = mu + a_s + b_p + e_sp, with a seed
effect a_s, a problem effect b_p shared by every seed, and a residual e_sp (with one value per
cell, the seed x problem interaction and the noise cannot be told apart: e_sp is both). The
bootstrap resamples seeds and problems independently, once each per resample (a two-way
bootstrap: the rows and columns of one resampled table), and `variance_components` /
`design_se` give the standard error of the mean difference under the same model,
Var(mean) = var_a / S + var_b / P + var_e / (S P). A nested scheme (problems redrawn within each
seed) would treat the problem effect as independent per seed and understate that variance.

Plain NumPy; no JAX.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from jaxtyping import Float

DEFAULT_RESAMPLES = 10_000


def mean_se(values: Float[np.ndarray, "P"]) -> tuple[float, float]:
    """(mean, standard error of the mean); the SE of one value is 0 (nothing to estimate it from)."""
    x = np.asarray(values, np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"mean_se: need a non-empty 1-D array, got shape {x.shape}")
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0
    return float(x.mean()), se


def paired_bootstrap(
    before: Float[np.ndarray, "*S P"], after: Float[np.ndarray, "*S P"], *, resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95, seed: int = 0,
) -> dict[str, float | list[float]]:
    """{"diff": mean(after - before), "ci95": [lo, hi], "se": bootstrap SE} over paired cells.

    1-D inputs are problems, resampled with replacement. 2-D inputs are (seeds, problems) of a
    crossed design (every seed on the same problems): each resample draws S seed indices and P
    problem indices with replacement, once, and takes the mean of d[seed_idx][:, problem_idx], so a
    problem's effect stays shared by the seeds. The interval is the percentile interval of the
    resampled mean differences.

    The 2-D bootstrap variance is exactly SS_seed / (S^2 P) + SS_problem / (S P^2) + SS_res / (S P)^2
    (two-way ANOVA sums of squares of d); under the model of `variance_components` its expectation
    is (1 - 1/S) var_a / S + (1 - 1/P) var_b / P + about 3 var_e / (S P): with few seeds it
    understates the seed component by the usual (S - 1) / S and it counts the residual about three
    times. `design_se` is the SE from unbiased components.
    """
    b, a = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if a.shape != b.shape or a.ndim not in (1, 2) or a.size == 0:
        raise ValueError(f"paired_bootstrap: need two non-empty arrays of one shape, (problems,) or "
                         f"(seeds, problems); got {b.shape} and {a.shape}")
    if not 0 < level < 1:
        raise ValueError(f"paired_bootstrap: level must lie in (0, 1), got {level}")
    d = (a - b).reshape(-1, a.shape[-1])  # (S, P); 1-D inputs are one seed
    S, P = d.shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, S, (resamples, S))  # (R, S): the seeds of each resample
    problems = rng.integers(0, P, (resamples, P), dtype=np.int32)  # (R, P): its problems, shared by its seeds
    # mean of d[seeds][:, problems] = mean over the drawn problems of the drawn seeds' mean column,
    # and the drawn seeds' column sums are (how often each seed was drawn) @ d.
    counts = np.bincount((seeds + S * np.arange(resamples)[:, None]).ravel(), minlength=resamples * S)
    column = counts.reshape(resamples, S).astype(np.float64) @ d  # (R, P): summed over the drawn seeds
    means = np.take_along_axis(column, problems, axis=1).mean(axis=1) / S  # (R,)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": float(d.mean()), "ci95": [float(lo), float(hi)], "se": float(means.std(ddof=1))}


class VarianceComponents(NamedTuple):
    """Variances of the crossed model d[s, p] = mu + a_s + b_p + e_sp: seed effect a, problem effect
    b, residual e (the seed x problem interaction and the noise, confounded without replication)."""

    seed: float
    problem: float
    residual: float


def variance_components(diffs: Float[np.ndarray, "S P"]) -> VarianceComponents:
    """(seed, problem, residual) variance components of paired differences d[seed, problem] of the
    crossed design, by the method-of-moments (two-way ANOVA without replication) estimator:

        MS_seed    = P sum_s (dbar_s. - dbar)^2 / (S - 1)              E = var_e + P var_a
        MS_problem = S sum_p (dbar_.p - dbar)^2 / (P - 1)              E = var_e + S var_b
        MS_res     = sum_sp (d_sp - dbar_s. - dbar_.p + dbar)^2 / ((S - 1)(P - 1))   E = var_e

    var_e = MS_res, var_a = (MS_seed - MS_res) / P, var_b = (MS_problem - MS_res) / S, the last two
    floored at 0. With one value per cell the interaction cannot be separated from the noise:
    var_e is both."""
    d = np.asarray(diffs, np.float64)
    if d.ndim != 2 or d.shape[0] < 2 or d.shape[1] < 2:
        raise ValueError(f"variance_components: need (seeds, problems) with at least 2 of each, got {d.shape}")
    S, P = d.shape
    grand, rows, cols = d.mean(), d.mean(axis=1), d.mean(axis=0)
    ms_seed = P * float(((rows - grand) ** 2).sum()) / (S - 1)
    ms_problem = S * float(((cols - grand) ** 2).sum()) / (P - 1)
    ms_res = float(((d - rows[:, None] - cols[None, :] + grand) ** 2).sum()) / ((S - 1) * (P - 1))
    return VarianceComponents(max((ms_seed - ms_res) / P, 0.0), max((ms_problem - ms_res) / S, 0.0), ms_res)


def design_se(var_seed: float, var_problem: float, var_residual: float, seeds: int, problems: int) -> float:
    """Standard error of the mean over a crossed `seeds` x `problems` table with the variance
    components of `variance_components`: sqrt(var_seed / S + var_problem / P + var_residual / (S P)).
    More problems shrink only the problem and residual terms, more seeds only the seed and residual
    terms."""
    return math.sqrt(var_seed / seeds + var_problem / problems + var_residual / (seeds * problems))


def min_detectable_difference(se_diff: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided level-alpha test detects with the given power, for an
    estimate with standard error se_diff (e.g. `design_se` for S seeds x P problems):
    (z_{1-alpha/2} + z_{power}) * se_diff (normal approx.)."""
    from statistics import NormalDist

    z = NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * float(se_diff)
