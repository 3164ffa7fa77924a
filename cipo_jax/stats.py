"""Error bars for evaluation: standard errors over problems and paired bootstrap intervals.

Every accuracy is a mean over problems of a per-problem value (a pass@k estimate, a 0/1
verdict), so its standard error is the sample standard deviation over problems / sqrt(P).
A before/after or arm-vs-arm claim is paired: both sides see the same problems, so the
interval comes from resampling the per-problem DIFFERENCES (with replacement, percentile
bootstrap). With several seeds the units are (seed, problem) cells: seeds are resampled,
then problems within each drawn seed (a two-level bootstrap), so seed-to-seed variance counts.

Plain NumPy; no JAX.
"""

from __future__ import annotations

import math

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

    1-D inputs are problems; 2-D inputs are (seeds, problems), resampled at both levels. The
    interval is the percentile interval of the resampled mean differences.
    """
    b, a = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if a.shape != b.shape or a.ndim not in (1, 2) or a.size == 0:
        raise ValueError(f"paired_bootstrap: need two non-empty arrays of one shape, (problems,) or "
                         f"(seeds, problems); got {b.shape} and {a.shape}")
    if not 0 < level < 1:
        raise ValueError(f"paired_bootstrap: level must lie in (0, 1), got {level}")
    d = (a - b).reshape(-1, a.shape[-1])  # (S, P)
    S, P = d.shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, S, (resamples, S))  # (R, S): seeds drawn per resample
    problems = rng.integers(0, P, (resamples, S, P), dtype=np.int32)  # (R, S, P): problems drawn within each
    means = d[seeds[:, :, None], problems].mean(axis=(1, 2))  # (R,)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": float(d.mean()), "ci95": [float(lo), float(hi)], "se": float(means.std(ddof=1))}


def variance_components(diffs: Float[np.ndarray, "S P"]) -> tuple[float, float]:
    """(seed-to-seed, problem-to-problem) variance of paired differences d[seed, problem], by the
    method-of-moments (one-way ANOVA) estimator for problems nested in seeds, the model the two-level
    bootstrap resamples: within = the mean over seeds of the sample variance over problems;
    between = the sample variance of the seed means minus within / P (their share of it), floored
    at 0. A problem effect shared by every seed is counted as within-seed variance."""
    d = np.asarray(diffs, np.float64)
    if d.ndim != 2 or d.shape[0] < 2 or d.shape[1] < 2:
        raise ValueError(f"variance_components: need (seeds, problems) with at least 2 of each, got {d.shape}")
    within = float(d.var(axis=1, ddof=1).mean())
    between = float(d.mean(axis=1).var(ddof=1)) - within / d.shape[1]
    return max(between, 0.0), within


def nested_se(var_seed: float, var_problem: float, seeds: int, problems: int) -> float:
    """Standard error of a mean over `seeds` x `problems` cells with the variance components of
    `variance_components`: each seed mean varies by var_seed + var_problem / problems."""
    return math.sqrt(var_seed / seeds + var_problem / (seeds * problems))


def min_detectable_difference(se_diff: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided level-alpha test detects with the given power, for an
    estimate with standard error se_diff: (z_{1-alpha/2} + z_{power}) * se_diff (normal approx.)."""
    from statistics import NormalDist

    z = NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * float(se_diff)
