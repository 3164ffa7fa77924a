"""Integer answers of generated arithmetic: the first integer after the last "Answer:" if
there is one, else the last integer in the response, must equal the reference."""

from __future__ import annotations

from cipo_jax.verifiers.extract import answer_line, integers


def check(response: str, reference: str) -> bool:
    try:
        expected = int(str(reference).strip().replace(",", ""))
    except ValueError:
        raise ValueError(f"exact verifier needs an integer reference, got {reference!r}") from None
    line = answer_line(response)
    after_phrase = integers(line) if line is not None else []
    found = after_phrase[:1] or integers(response)[-1:]
    return found == [expected]
