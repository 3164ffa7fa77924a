"""pass@k and self-correction metrics against independent references: enumeration over all
k-subsets of the n samples, and hand-worked cases."""

import itertools
import math

import numpy as np
import pytest

from cipo_jax.evaluation.passk import k_values, pass_at_k, pass_at_k_curve
from cipo_jax.evaluation.selfcorrect import self_correction_metrics


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of k-subsets of n samples (the first c passing) that hold a passing sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_subset_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_large_n_matches_exact_binomials():
    # Python's exact integer binomials as the reference where the naive float ratio would overflow.
    n, k = 2000, 64
    for c in (0, 1, 7, 500, 1936, 1937, 2000):
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12, abs=1e-15)


def test_pass_at_1_is_the_pass_rate():
    rng = np.random.default_rng(0)
    correct = rng.random((50, 16)) < 0.3
    assert pass_at_k_curve(correct)[1] == pytest.approx(correct.mean())


def test_curve_averages_per_problem_values():
    correct = np.array([[True, False, False, False], [False, False, False, False], [True, True, True, True]])
    curve = pass_at_k_curve(correct)
    assert list(curve) == [1, 2, 4]
    expected = {k: np.mean([brute_force_pass_at_k(4, c, k) for c in (1, 0, 4)]) for k in (1, 2, 4)}
    assert curve == pytest.approx(expected)


def test_k_values():
    assert k_values(1) == [1]
    assert k_values(8) == [1, 2, 4, 8]
    assert k_values(6) == [1, 2, 4, 6]


@pytest.mark.parametrize("args, message", [((4, 5, 1), "0 <= c <= n"), ((4, -1, 1), "0 <= c <= n"),
                                           ((4, 2, 0), "1 <= k <= n"), ((4, 2, 5), "1 <= k <= n")])
def test_pass_at_k_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(*args)


def test_curve_rejects_bad_arrays():
    with pytest.raises(ValueError, match="boolean"):
        pass_at_k_curve(np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-empty"):
        pass_at_k_curve(np.ones(3, bool))


def test_self_correction_constructed_case():
    # 10 problems: 3 right->right, 2 wrong->right, 1 right->wrong, 4 wrong->wrong.
    t1 = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0], bool)
    t2 = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], bool)
    m = self_correction_metrics(t1, t2)
    assert m == pytest.approx({"acc_t1": 0.4, "acc_t2": 0.5, "delta": 0.1, "delta_i2c": 0.2, "delta_c2i": 0.1})
    assert m["delta"] == pytest.approx(m["delta_i2c"] - m["delta_c2i"])


def test_self_correction_extremes():
    every = np.ones(4, bool)
    none = np.zeros(4, bool)
    assert self_correction_metrics(every, none) == pytest.approx(
        {"acc_t1": 1.0, "acc_t2": 0.0, "delta": -1.0, "delta_i2c": 0.0, "delta_c2i": 1.0})
    assert self_correction_metrics(none, every)["delta_i2c"] == 1.0
    assert self_correction_metrics(every, every)["delta"] == 0.0


def test_self_correction_rejects_bad_input():
    with pytest.raises(ValueError, match="boolean"):
        self_correction_metrics(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="one shape"):
        self_correction_metrics(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ValueError, match="non-empty"):
        self_correction_metrics(np.ones(0, bool), np.ones(0, bool))
