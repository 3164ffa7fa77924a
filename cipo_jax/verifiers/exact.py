"""Integer answers of generated arithmetic: the integer after the last "Answer:" if present,
else the last integer in the response, must equal the reference."""

from __future__ import annotations

from cipo_jax.verifiers.extract import answer_line, last_integer


def check(response: str, reference: str) -> bool:
    try:
        expected = int(str(reference).strip().replace(",", ""))
    except ValueError:
        raise ValueError(f"exact verifier needs an integer reference, got {reference!r}") from None
    line = answer_line(response)
    got = last_integer(line) if line is not None else None
    if got is None:
        got = last_integer(response)
    return got == expected
