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
from cipo_jax.stats import design_se, mean_se, min_detectable_difference, paired_bootstrap, variance_components


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


def test_paired_bootstrap_crossed_matches_exhaustive_enumeration():
    """(seeds, problems) = (2, 3), crossed: every resample draws 2 seed indices and 3 problem
    indices with replacement, once, and averages d[seeds][:, problems]. All 2^2 x 3^3 = 108 index
    tuples are equally likely; their means are the exact bootstrap distribution."""
    before = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    after = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    d = after - before
    S, P = d.shape
    exact = np.array([np.mean([[d[s, p] for p in probs] for s in seeds])
                      for seeds in itertools.product(range(S), repeat=S)
                      for probs in itertools.product(range(P), repeat=P)])
    assert exact.size == 108
    got = paired_bootstrap(before, after, resamples=100_000, seed=2)
    assert got["diff"] == pytest.approx(d.mean()) == pytest.approx(exact.mean())
    assert got["se"] == pytest.approx(exact.std(), rel=0.02)
    _check_interval_against_exact(got["ci95"], exact)
    # the exact variance in closed form, from the two-way sums of squares (stats.paired_bootstrap)
    g, rows, cols = d.mean(), d.mean(axis=1), d.mean(axis=0)
    ss_seed, ss_problem = P * ((rows - g) ** 2).sum(), S * ((cols - g) ** 2).sum()
    ss_res = ((d - rows[:, None] - cols + g) ** 2).sum()
    assert exact.var() == pytest.approx(ss_seed / (S * S * P) + ss_problem / (S * P * P) + ss_res / (S * P) ** 2)


def test_paired_bootstrap_keeps_a_problem_effect_shared_by_the_seeds():
    """Every seed sees the same per-problem differences: the seeds add no information, so the
    2-D interval is as wide as the 1-D one over problems (a nested bootstrap, redrawing problems
    within each seed, would shrink it by about sqrt(S))."""
    row = np.random.default_rng(5).normal(size=40)
    d = np.tile(row, (4, 1))
    two = paired_bootstrap(np.zeros_like(d), d, resamples=20_000, seed=3)
    one = paired_bootstrap(np.zeros_like(row), row, resamples=20_000, seed=3)
    assert two["diff"] == pytest.approx(one["diff"])
    assert two["se"] == pytest.approx(one["se"], rel=0.03)
    assert two["se"] == pytest.approx(row.std() / math.sqrt(row.size), rel=0.03)


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


def _two_way_anova(d):
    """Mean squares of a two-way table without replication, as loops over the cells."""
    S, P = len(d), len(d[0])
    rows = [sum(d[s][p] for p in range(P)) / P for s in range(S)]
    cols = [sum(d[s][p] for s in range(S)) / S for p in range(P)]
    grand = sum(rows) / S
    ms_seed = P * sum((rows[s] - grand) ** 2 for s in range(S)) / (S - 1)
    ms_problem = S * sum((cols[p] - grand) ** 2 for p in range(P)) / (P - 1)
    ms_res = sum((d[s][p] - rows[s] - cols[p] + grand) ** 2 for s in range(S) for p in range(P)) / ((S - 1) * (P - 1))
    return ms_seed, ms_problem, ms_res


def test_variance_components_match_the_two_way_anova():
    """Against the textbook two-way ANOVA (no replication) written as loops: var_e = MS_res,
    var_seed = (MS_seed - MS_res) / P, var_problem = (MS_problem - MS_res) / S."""
    rng = np.random.default_rng(3)
    d = rng.normal(size=(4, 7)) + rng.normal(size=(4, 1)) + 2 * rng.normal(size=(1, 7))
    S, P = d.shape
    ms_seed, ms_problem, ms_res = _two_way_anova(d.tolist())
    vc = variance_components(d)
    assert vc.residual == pytest.approx(ms_res)
    assert vc.seed == pytest.approx((ms_seed - ms_res) / P)
    assert vc.problem == pytest.approx((ms_problem - ms_res) / S)
    assert vc.seed > 0 and vc.problem > 0
    # additive without noise: the components are the sample variances of the effects, residual 0
    a, b = np.array([0.0, 0.1, 0.3]), np.array([0.0, 0.5, 0.0, 0.2])
    assert variance_components(a[:, None] + b) == pytest.approx((a.var(ddof=1), b.var(ddof=1), 0.0))
    # identical rows (a problem effect shared by both seeds): all problem variance, none seed
    assert variance_components(np.array([[0.0, 0.5, 0.0], [0.0, 0.5, 0.0]])) == pytest.approx((0.0, 1 / 12, 0.0))
    assert variance_components(np.array([[0.0, 1.0], [1.0, 0.0]])) == (0.0, 0.0, 1.0)  # floored, not negative
    assert design_se(0.04, 0.09, 0.25, 4, 9) == pytest.approx(math.sqrt(0.01 + 0.01 + 0.25 / 36))
    with pytest.raises(ValueError, match="at least 2 of each"):
        variance_components(np.zeros((1, 5)))


def test_min_detectable_difference_has_its_power_in_simulation():
    """Data drawn from the crossed model d = mu + a_s + b_p + e_sp with known variances: the
    estimated components are unbiased, design_se is the spread of the grand mean (the nested
    formula, which lets the problem effect average out over seeds, is far below it), and a true
    difference of min_detectable_difference is detected in 80% of the experiments."""
    var_seed, var_problem, var_res, S, P, R = 0.002, 0.04, 0.02, 5, 40, 4000
    se = design_se(var_seed, var_problem, var_res, S, P)
    mdd = min_detectable_difference(se)
    rng = np.random.default_rng(4)
    d = (mdd + rng.normal(0, math.sqrt(var_seed), (R, S, 1)) + rng.normal(0, math.sqrt(var_problem), (R, 1, P))
         + rng.normal(0, math.sqrt(var_res), (R, S, P)))
    estimates = np.array([variance_components(x) for x in d])  # (R, 3)
    assert estimates.mean(axis=0) == pytest.approx([var_seed, var_problem, var_res], rel=0.05)
    means = d.mean(axis=(1, 2))
    assert means.std() == pytest.approx(se, rel=0.03)
    assert means.std() > 1.3 * math.sqrt(var_seed / S + (var_problem + var_res) / (S * P))
    predicted = np.sqrt(estimates[:, 0] / S + estimates[:, 1] / P + estimates[:, 2] / (S * P))
    assert np.median(predicted) == pytest.approx(se, rel=0.05)
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
