"""Evaluation statistics against independent references: the textbook SE, an exhaustive
enumeration of every bootstrap resample on tiny inputs, and hand-worked per-problem metrics."""

import itertools
import math
import statistics

import numpy as np
import pytest

from cipo_jax.evaluation.evaluate import paired_comparison, per_problem_metrics
from cipo_jax.evaluation.passk import pass_at_k_curve
from cipo_jax.evaluation.selfcorrect import self_correction_metrics
from cipo_jax.stats import mean_se, min_detectable_difference, nested_se, paired_bootstrap, variance_components


def test_mean_se_is_the_textbook_formula():
    x = [0.0, 1.0, 1.0, 0.5, 0.25]
    m, se = mean_se(np.array(x))
    assert m == pytest.approx(statistics.fmean(x))
    assert se == pytest.approx(statistics.stdev(x) / math.sqrt(len(x)))
    assert mean_se(np.array([0.3])) == (0.3, 0.0)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        mean_se(np.zeros((2, 2)))


def _exact_cdf(means: np.ndarray):
    means = np.sort(means)
    return lambda v: np.searchsorted(means, v + 1e-12, side="right") / means.size


def _check_interval_against_exact(ci, exact_means, level=0.95, tol=0.01):
    """Each end of the Monte-Carlo percentile interval sits at its quantile of the exact
    bootstrap distribution (up to Monte-Carlo error and the atom of mass at that point)."""
    cdf = _exact_cdf(np.asarray(exact_means))
    for end, q in zip(ci, ((1 - level) / 2, (1 + level) / 2)):
        assert cdf(end) >= q - tol, (end, q, cdf(end))
        assert cdf(end - 1e-9) <= q + tol, (end, q, cdf(end - 1e-9))


def test_paired_bootstrap_matches_exhaustive_enumeration_over_problems():
    before = np.array([0.0, 1.0, 0.0, 0.5])
    after = np.array([1.0, 1.0, 0.0, 1.0])
    d = after - before
    exact = [d[list(idx)].mean() for idx in itertools.product(range(4), repeat=4)]  # all 4^4 resamples
    got = paired_bootstrap(before, after, resamples=100_000, seed=1)
    assert got["diff"] == pytest.approx(d.mean())
    _check_interval_against_exact(got["ci95"], exact)
    assert got["se"] == pytest.approx(np.std(exact), rel=0.02)


def test_paired_bootstrap_two_levels_matches_exhaustive_enumeration():
    """(seeds, problems) = (2, 3): draw 2 seeds with replacement, then 3 problems within each."""
    before = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    after = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    d = after - before
    exact = []
    for seeds in itertools.product(range(2), repeat=2):
        for probs in itertools.product(itertools.product(range(3), repeat=3), repeat=2):
            exact.append(np.mean([d[s, list(p)] for s, p in zip(seeds, probs)]))
    got = paired_bootstrap(before, after, resamples=100_000, seed=2)
    assert got["diff"] == pytest.approx(d.mean())
    _check_interval_against_exact(got["ci95"], exact)


def test_paired_bootstrap_is_not_vacuous():
    # Identical sides: a zero-width interval at 0. A constant shift: the interval is that shift.
    x = np.linspace(0, 1, 50)
    assert paired_bootstrap(x, x)["ci95"] == [0.0, 0.0]
    shifted = paired_bootstrap(x, x + 0.1)
    assert shifted["ci95"] == pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError, match="same shape|one shape"):
        paired_bootstrap(x, x[:10])


def test_min_detectable_difference():
    # z_{0.975} + z_{0.8} = 1.959964 + 0.841621 = 2.801585.
    assert min_detectable_difference(0.01) == pytest.approx(0.02801585, rel=1e-5)


def test_variance_components_match_the_anova_sums_of_squares():
    """Against the textbook one-way ANOVA written as loops: MS_within = SS_within / (S (P - 1)),
    MS_between = P SS_between / (S - 1), var_seed = (MS_between - MS_within) / P."""
    rng = np.random.default_rng(3)
    d = rng.normal(size=(4, 7)) + rng.normal(size=(4, 1))
    S, P = d.shape
    means = [sum(row) / P for row in d]
    grand = sum(means) / S
    ms_within = sum((x - m) ** 2 for row, m in zip(d, means) for x in row) / (S * (P - 1))
    ms_between = P * sum((m - grand) ** 2 for m in means) / (S - 1)
    var_seed, var_problem = variance_components(d)
    assert var_problem == pytest.approx(ms_within)
    assert var_seed == pytest.approx((ms_between - ms_within) / P)
    assert variance_components(np.array([[0.0, 1.0], [0.0, 1.0]]))[0] == 0.0  # floored, not negative
    with pytest.raises(ValueError, match="at least 2 of each"):
        variance_components(np.zeros((1, 5)))


def test_min_detectable_difference_has_its_power_in_simulation():
    """Data drawn from the nested model (a seed effect, then independent problem noise) with known
    variances: the estimated components are unbiased, nested_se is the spread of the grand mean,
    and a true difference of min_detectable_difference is detected in 80% of the experiments."""
    var_seed, var_problem, S, P, R = 0.01, 0.09, 10, 30, 4000
    se = nested_se(var_seed, var_problem, S, P)
    mdd = min_detectable_difference(se)
    rng = np.random.default_rng(4)
    d = (mdd + rng.normal(0, math.sqrt(var_seed), (R, S, 1)) + rng.normal(0, math.sqrt(var_problem), (R, S, P)))
    estimates = np.array([variance_components(x) for x in d])  # (R, 2)
    assert estimates[:, 0].mean() == pytest.approx(var_seed, rel=0.05)
    assert estimates[:, 1].mean() == pytest.approx(var_problem, rel=0.01)
    means = d.mean(axis=(1, 2))
    assert means.std() == pytest.approx(se, rel=0.05)
    detected = np.abs(means) / se > statistics.NormalDist().inv_cdf(0.975)
    assert detected.mean() == pytest.approx(0.8, abs=0.025)


def _result(correct, n, t1, t2):
    correct_pn = np.array([[j < c for j in range(n)] for c in correct])
    return {"pass_at_k": {str(k): v for k, v in pass_at_k_curve(correct_pn).items()},
            "self_correction": self_correction_metrics(np.array(t1, bool), np.array(t2, bool)),
            "per_problem": {"correct": list(correct), "n": n, "t1": list(t1), "t2": list(t2)}}


def test_per_problem_metrics_average_to_the_reported_metrics():
    # 3 problems, n = 4: pass@1 per problem is c / 4; pass@2 = 1 - C(4-c, 2) / C(4, 2).
    r = _result([0, 1, 4], 4, [0, 1, 1], [1, 1, 0])
    per = per_problem_metrics(r)
    np.testing.assert_allclose(per["pass@1"], [0, 0.25, 1])
    np.testing.assert_allclose(per["pass@2"], [0, 1 - 3 / 6, 1])
    for k, v in r["pass_at_k"].items():
        assert per[f"pass@{k}"].mean() == pytest.approx(v)
    for key, v in r["self_correction"].items():
        assert per[key].mean() == pytest.approx(v)
    np.testing.assert_array_equal(per["delta_i2c"], [1, 0, 0])
    np.testing.assert_array_equal(per["delta_c2i"], [0, 0, 1])


def test_paired_comparison_pairs_problems():
    before = _result([0, 0, 2, 4], 4, [0, 0, 1, 1], [0, 1, 1, 1])
    after = _result([2, 0, 4, 4], 4, [1, 0, 1, 1], [1, 1, 1, 1])
    paired = paired_comparison(before, after)
    assert paired["pass@1"]["diff"] == pytest.approx((0.5 + 0 + 0.5 + 0) / 4)
    assert paired["acc_t1"]["diff"] == pytest.approx(0.25)
    lo, hi = paired["pass@1"]["ci95"]
    assert 0.0 <= lo <= 0.25 <= hi <= 0.5
    with pytest.raises(ValueError, match="different numbers of problems"):
        paired_comparison(before, _result([1], 4, [0], [0]))
