"""Pull the final answer out of a model response. Pure string functions, no dependencies."""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 2000  # longer "answers" are garbage and only slow the checker down

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_LINE = re.compile(r"(?:answer is|answer:)\s*(.+)", re.IGNORECASE)
_INTEGER = re.compile(r"-?\d[\d,]*")
_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), nested braces balanced."""
    found = None
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    found = text[start:i]
                    break
    return found


def answer_line(text: str) -> str | None:
    """What follows the last "answer is" / "Answer:", to the end of its line, minus trailing
    punctuation and `$` delimiters."""
    matches = _ANSWER_LINE.findall(text)
    if not matches:
        return None
    answer = matches[-1].strip().rstrip(".").strip()
    if len(answer) >= 2 and answer[0] == "$" and answer[-1] == "$":
        answer = answer.strip("$").strip()
    return answer or None


def final_answer(text: str, *, boxed: bool = True, answer_phrase: bool = True) -> str | None:
    """The last box if any (and `boxed`), else the "answer is"/"Answer:" line (if
    `answer_phrase`), else None. Over-long answers count as none."""
    answer = last_boxed(text) if boxed else None
    if answer is None and answer_phrase:
        answer = answer_line(text)
    if answer is None or len(answer) > MAX_ANSWER_CHARS:
        return None
    return answer.strip()


def last_tag(text: str) -> str | None:
    """Content of the last `<answer>...</answer>`."""
    matches = _TAG.findall(text)
    return matches[-1].strip() if matches else None


def last_line(text: str) -> str | None:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def integers(text: str) -> list[int]:
    """Every integer in `text`, in order (thousands commas allowed)."""
    found = [m.strip(",").replace(",", "") for m in _INTEGER.findall(text)]
    return [int(m) for m in found if m.lstrip("-")]
