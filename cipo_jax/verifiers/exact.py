"""Integer answers of generated arithmetic. The response's answer is, when it has an answer
phrase ("Answer:", "the answer is"), the first integer after the last "=" of that line (so
"The answer is: 4 + 6 = 10" gives 10) or else its first integer ("Answer: -3 (after 10 steps)"
gives -3); without a phrase, the last integer in the response. It must equal the reference."""

from __future__ import annotations

from cipo_jax.verifiers.extract import answer_line, integers


def final_integer(text: str) -> int | None:
    """The integer a response gives as its answer (rule above), or None."""
    line = answer_line(text)
    if line is not None:
        found = integers(line.rsplit("=", 1)[-1]) or integers(line)
        if found:
            return found[0]
    found = integers(text)
    return found[-1] if found else None


def check(response: str, reference: str) -> bool:
    try:
        expected = int(str(reference).strip().replace(",", ""))
    except ValueError:
        raise ValueError(f"exact verifier needs an integer reference, got {reference!r}") from None
    return final_integer(response) == expected
