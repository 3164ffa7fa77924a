"""The CIPO-over-GRPO overhead figures of `bench step` / `bench rl-step`, on hand-computed numbers."""

import pytest

from cipo_jax.bench.step import cipo_overhead, overhead_line


def test_cipo_overhead_prices_each_phase_by_its_own_work():
    grpo = {"step_time_net": 10.0, "time_update": 6.0, "tokens": 100.0, "trained_tokens": 200.0}
    cipo = {"step_time_net": 15.0, "time_update": 9.5, "tokens": 125.0, "trained_tokens": 300.0}
    r = cipo_overhead(grpo, cipo)
    # generated tokens 1.25x, trained tokens 1.5x; the step takes 1.5x
    assert (r["tokens"], r["trained_tokens"], r["step_time"]) == pytest.approx((1.25, 1.5, 1.5))
    assert r["overhead"] == pytest.approx(1.5 / 1.25)
    # expected CIPO step: 4 s of sampling etc. x 1.25 + 6 s of update x 1.5 = 14 s
    assert r["overhead_by_phase"] == pytest.approx(15.0 / 14.0)
    assert "1.20x beyond the extra generated tokens, 1.07x beyond" in overhead_line(r)
