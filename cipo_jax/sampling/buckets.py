"""Host-side batch layout: checking prompts, rounding shapes to buckets, right-padding.

Shapes are rounded up to powers of two so batches of varied size reuse a few compiled
programs instead of compiling per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_PROMPT_BUCKET = 8
MIN_NEW_TOKENS_BUCKET = 8
MIN_STOP_BUCKET = 4


def bucket(size: int, minimum: int = 1, multiple: int = 1) -> int:
    """The next power of two >= size (at least `minimum`), rounded up to a multiple of `multiple`."""
    b = max(minimum, 1 << max(size - 1, 0).bit_length())
    return -(-b // multiple) * multiple


@dataclass(frozen=True)
class PromptBatch:
    tokens: np.ndarray  # int32 [Pb, Lp], right-padded with 0
    lengths: np.ndarray  # int32 [Pb]; 0 marks a padding row that is not a prompt
    num_prompts: int  # P real prompts; rows >= P are padding


def check_prompts(
    prompts, *, max_new_tokens: int, max_len: int, vocab_size: int, truncate: bool
) -> list[list[int]]:
    """Validated prompts as int lists; a prompt over the context budget is an error, or keeps
    its last tokens when `truncate`."""
    if isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__len__") or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of token-id lists")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    budget = max_len - max_new_tokens
    if budget < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in max_len={max_len}")
    out = []
    for i, prompt in enumerate(prompts):
        ids = np.asarray(prompt)
        if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"prompt {i} must be a non-empty list of int token ids")
        if ids.min() < 0 or ids.max() >= vocab_size:
            raise ValueError(f"prompt {i} has token ids outside [0, {vocab_size})")
        if ids.size > budget:
            if not truncate:
                raise ValueError(
                    f"prompt {i} has {ids.size} tokens; with max_new_tokens={max_new_tokens} that exceeds "
                    f"max_len={max_len} (pass truncate_prompts=True to keep its last {budget} tokens)"
                )
            ids = ids[-budget:]
        out.append([int(t) for t in ids])
    return out


def pad_prompts(prompts: list[list[int]], *, batch_multiple: int = 1) -> PromptBatch:
    """Right-pad into a [Pb, Lp] bucket. Right padding keeps every query row attending at least
    its own prompt, and decode writes all rows at one shared cache slot."""
    rows = bucket(len(prompts), 1, batch_multiple)
    width = bucket(max(len(p) for p in prompts), MIN_PROMPT_BUCKET)
    tokens = np.zeros((rows, width), np.int32)
    lengths = np.zeros((rows,), np.int32)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = p
        lengths[i] = len(p)
    return PromptBatch(tokens, lengths, len(prompts))


def pad_stop_tokens(stop_tokens) -> np.ndarray:
    """Stop ids padded with -1 (matches nothing) to a bucket, so their count rarely recompiles."""
    ids = [int(t) for t in stop_tokens]
    out = np.full((bucket(len(ids), MIN_STOP_BUCKET),), -1, np.int32)
    out[: len(ids)] = ids
    return out
