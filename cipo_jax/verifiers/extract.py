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


# ---- code answers (chat models answer with prose around a fenced block) ----

_FENCE = re.compile(r"^[ \t]*```[^\n`]*$", re.MULTILINE)  # an opening or closing fence line
_KEPT_STATEMENTS = ("Import", "ImportFrom", "FunctionDef", "AsyncFunctionDef", "ClassDef", "Assign", "AnnAssign")
_CODE_START = re.compile(r"^(?:def |async def |class |import |from |@)", re.MULTILINE)
_CODE_LINE = re.compile(r"^(?:def |async def |class |import |from |@|[ \t]+\S)", re.MULTILINE)  # or an indented body


def fenced_code(text: str, entry_point: str | None = None) -> str:
    """The code of a markdown answer: the first fenced block that defines `entry_point` (else the
    first block). A block left open (the answer ran out of tokens) runs to the end; a closing fence
    with no opening one (the answer began with code) ends the code. Without fences, `text`."""
    fences = list(_FENCE.finditer(text))
    if not fences:
        return text
    before = text[:fences[0].start()]
    if fences[0].group().strip() == "```" and _CODE_LINE.search(before):
        return before  # code first, then a closing fence with no opening one (then prose)
    blocks = [text[open_.end() + 1:(close.start() if close else len(text))]
              for open_, close in zip(fences[::2], [*fences[1::2], None])]
    if entry_point:
        defining = [b for b in blocks if f"def {entry_point}(" in b]
        if defining:
            return defining[0]
    return blocks[0]


def program_definitions(code: str) -> str:
    """The definitions of a code answer, as the HumanEval-style sanitisers keep them: imports,
    functions, classes and top-level assignments, in order. Example calls, prints and asserts the
    model wrote around them go (they prove nothing and may fail on their own). Prose before the
    first definition and lines past the last that parses (a reply cut off mid-line) are dropped."""
    import ast

    start = _CODE_START.search(code)
    lines = code[start.start():].splitlines() if start else code.splitlines()
    tree = None
    for end in range(len(lines), 0, -1):  # the longest prefix that parses
        try:
            tree = ast.parse("\n".join(lines[:end]))
            break
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    if tree is None:
        return code
    kept = []
    for node in tree.body:
        if type(node).__name__ in _KEPT_STATEMENTS:
            first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
            kept.append("\n".join(lines[first - 1:node.end_lineno]))
    return "\n\n".join(kept) + "\n" if kept else code
