"""Two-attempt self-correction metrics (CIPO.md "What to measure").

t1[i] says whether the first attempt at problem i passed, t2[i] whether the correction of that
attempt (made with the training correction template) passed.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool

METRICS = ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i")


def self_correction_metrics(t1: Bool[np.ndarray, "problems"], t2: Bool[np.ndarray, "problems"]) -> dict[str, float]:
    """acc@t1, acc@t2, delta = acc@t2 - acc@t1, delta(i->c) = P(t1 wrong, t2 right),
    delta(c->i) = P(t1 right, t2 wrong); so delta = delta(i->c) - delta(c->i)."""
    t1, t2 = np.asarray(t1), np.asarray(t2)
    if t1.dtype != np.bool_ or t2.dtype != np.bool_:
        raise ValueError(f"self_correction_metrics: need boolean arrays, got {t1.dtype} and {t2.dtype}")
    if t1.ndim != 1 or t1.shape != t2.shape or t1.size == 0:
        raise ValueError(f"self_correction_metrics: need two non-empty 1-D arrays of one shape, "
                         f"got {t1.shape} and {t2.shape}")
    acc_t1, acc_t2 = float(t1.mean()), float(t2.mean())
    return {"acc_t1": acc_t1, "acc_t2": acc_t2, "delta": acc_t2 - acc_t1,
            "delta_i2c": float((~t1 & t2).mean()), "delta_c2i": float((t1 & ~t2).mean())}


def round_values(attempts: Bool[np.ndarray, "rounds problems"]) -> dict[str, np.ndarray]:
    """Per-problem values of R-round self-correction (attempt r+1 corrects attempt r); each metric
    is the mean of its values: acc_t{r}, and for r >= 2 delta_t{r} = acc_t{r} - acc_t{r-1},
    delta_i2c_t{r} = P(t{r-1} wrong, t{r} right), delta_c2i_t{r} = P(t{r-1} right, t{r} wrong)."""
    a = np.asarray(attempts)
    if a.dtype != np.bool_ or a.ndim != 2 or a.shape[0] < 2 or a.shape[1] == 0:
        raise ValueError(f"round_values: need a boolean (rounds >= 2, problems >= 1) array, got {a.dtype} {a.shape}")
    out = {f"acc_t{r + 1}": a[r].astype(float) for r in range(a.shape[0])}
    for r in range(1, a.shape[0]):
        prev, cur = a[r - 1], a[r]
        out[f"delta_t{r + 1}"] = cur.astype(float) - prev
        out[f"delta_i2c_t{r + 1}"] = (~prev & cur).astype(float)
        out[f"delta_c2i_t{r + 1}"] = (prev & ~cur).astype(float)
    return out
