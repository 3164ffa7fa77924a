"""Unbiased pass@k (Chen et al. 2021): with n samples of a problem of which c pass,

    pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)

The product form never forms the (huge) binomials, so it stays exact in floating point for any n.
Per-problem values are averaged over problems.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool, Float


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples, drawn without replacement from n of which c pass, passes."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every k-subset holds a passing sample
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def k_values(n: int) -> list[int]:
    """1, 2, 4, ... up to n, plus n itself when it is not a power of two."""
    if n < 1:
        raise ValueError(f"k_values: n must be >= 1, got {n}")
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else ks + [n]


def pass_at_k_per_problem(correct_pn: Bool[np.ndarray, "problems samples"], k: int) -> Float[np.ndarray, "problems"]:
    correct_pn = _check_correct(correct_pn)
    n = correct_pn.shape[1]
    return np.array([pass_at_k(n, int(c), k) for c in correct_pn.sum(axis=1)])


def pass_at_k_curve(correct_pn: Bool[np.ndarray, "problems samples"]) -> dict[int, float]:
    """{k: mean over problems of pass@k} for k in k_values(n)."""
    correct_pn = _check_correct(correct_pn)
    return {k: float(pass_at_k_per_problem(correct_pn, k).mean()) for k in k_values(correct_pn.shape[1])}


def _check_correct(correct_pn) -> np.ndarray:
    correct_pn = np.asarray(correct_pn)
    if correct_pn.ndim != 2 or correct_pn.shape[0] == 0 or correct_pn.shape[1] == 0:
        raise ValueError(f"pass@k: need a non-empty (problems, samples) array, got shape {correct_pn.shape}")
    if correct_pn.dtype != np.bool_:
        raise ValueError(f"pass@k: need a boolean array, got dtype {correct_pn.dtype}")
    return correct_pn
