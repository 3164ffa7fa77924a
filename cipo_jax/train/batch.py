"""Pack variable-length (prompt, completion) rows into the padded arrays the loss reads.

Layout (right padding, positions 0..T-1 per row): `tokens[n]` = prompt + completion;
`completion_mask[n, t]` = 1 where token t is a generated token that the loss counts;
`old_logp[n, t]` = the sampler's log-prob of that token. Lengths are rounded up to buckets so the
jitted step compiles once per bucket, not once per batch.
"""

from __future__ import annotations

import numpy as np

from cipo_jax.cipo.step import Row


def round_up(x: int, multiple: int) -> int:
    return max(multiple, -(-x // multiple) * multiple)


def bucket_rows(n: int, unit: int) -> int:
    """The row count `n` rows are padded to: `unit` (micro-batches x shards) times 1, 2, 3, 4, 6,
    8, 12, 16, ... (powers of two and 1.5x them). A run then compiles its step for a few shapes and
    pads fewer than half the rows again; a fixed multiple such as 32 would pad 8 correction rows
    to 32."""
    units = -(-n // unit)
    power = 1 << max(units - 1, 0).bit_length()
    return unit * (power * 3 // 4 if power >= 4 and power * 3 // 4 >= units else power)


def check_completion_window(rows: list[Row], width: int) -> None:
    """The update scores `width` positions from each row's first counted token (`make_update`'s
    completion_width): a longer completion would lose its tail from every loss term silently."""
    longest = max((len(r.completion) for r in rows), default=0)
    if longest > width:
        raise ValueError(f"a completion of {longest} tokens exceeds the update's scoring window of {width} "
                         f"(sampling.max_new_tokens)")


def pack_rows(rows: list[Row], *, row_multiple: int = 1, len_multiple: int = 32,
              max_len: int | None = None, num_rows: int | None = None) -> dict[str, np.ndarray]:
    """Padded numpy arrays for `rows`; padding rows have all-zero masks and weights. Rows are
    padded to `num_rows` when given, else to a multiple of `row_multiple`."""
    if not rows:
        raise ValueError("pack_rows: no rows to pack")
    longest = max(len(r.prompt) + len(r.completion) for r in rows)
    T = round_up(longest, len_multiple)
    if max_len is not None:
        if longest > max_len:
            raise ValueError(f"a row of {longest} tokens exceeds the model context of {max_len}")
        T = min(T, max_len)
    N = round_up(len(rows), row_multiple) if num_rows is None else num_rows
    if N < len(rows):
        raise ValueError(f"pack_rows: {len(rows)} rows do not fit num_rows={N}")
    tokens = np.zeros((N, T), np.int32)
    mask = np.zeros((N, T), np.float32)
    old_logp = np.zeros((N, T), np.float32)
    adv = np.zeros((N,), np.float32)
    stream = np.zeros((N,), np.int32)
    nll_w = np.zeros((N,), np.float32)
    for n, r in enumerate(rows):
        if len(r.logprobs) != len(r.completion):
            raise ValueError(f"row {n}: {len(r.completion)} completion tokens but {len(r.logprobs)} logprobs")
        p, c = len(r.prompt), len(r.completion)
        tokens[n, :p] = r.prompt
        tokens[n, p:p + c] = r.completion
        if r.counted:
            mask[n, p:p + c] = 1.0
            nll_w[n] = r.nll_weight
        old_logp[n, p:p + c] = r.logprobs
        adv[n] = r.advantage
        stream[n] = r.stream
    return dict(tokens=tokens, completion_mask=mask, old_logp=old_logp, advantages=adv,
                stream=stream, nll_weight=nll_w)
