"""Row buckets of the update: few shapes, little padding (checked by enumeration)."""

import numpy as np
import pytest

from cipo_jax.cipo.step import Row
from cipo_jax.train.batch import bucket_rows, check_completion_window, pack_rows


@pytest.mark.parametrize("unit", [1, 2, 4, 8, 32])
def test_row_buckets_fit_divide_and_pad_little(unit):
    sizes = [bucket_rows(n, unit) for n in range(1, 2049)]
    allowed = sorted({1 << k for k in range(13)} | {3 << k for k in range(12)})  # 1, 2, 3, 4, 6, 8, 12, ...
    for n, size in enumerate(sizes, start=1):
        assert size >= n and size % unit == 0
        units = -(-n // unit)
        # The smallest allowed multiple of unit that holds n rows, by enumeration.
        assert size == unit * next(a for a in allowed if a >= units)
        assert size < 1.5 * units * unit
    assert sizes == sorted(sizes)
    # About two shapes per doubling: 2048 row counts compile at most ~2 log2 shapes.
    assert len(set(sizes)) <= 2 * int(np.log2(2048 / unit)) + 2


def test_pack_rows_pads_to_the_bucket_with_rows_outside_every_term():
    rows = [Row(prompt=[1, 2], completion=[3, 4, 5], logprobs=[-0.1, -0.2, -0.3], advantage=0.5, stream=1,
                counted=True, nll_weight=1.0)] * 5
    packed = pack_rows(rows, num_rows=bucket_rows(len(rows), 2), len_multiple=4)
    assert packed["tokens"].shape == (6, 8)
    assert packed["completion_mask"][:5].sum() == 15 and not packed["completion_mask"][5:].any()
    assert not packed["nll_weight"][5:].any() and not packed["advantages"][5:].any()
    with pytest.raises(ValueError, match="do not fit"):
        pack_rows(rows, num_rows=4)


def test_a_completion_past_the_scoring_window_is_an_error():
    rows = [Row(prompt=[1], completion=[2] * n, logprobs=[-0.1] * n) for n in (3, 6)]
    check_completion_window(rows, 6)  # fits exactly
    with pytest.raises(ValueError, match="completion of 6 tokens exceeds the update's scoring window of 5"):
        check_completion_window(rows, 5)
