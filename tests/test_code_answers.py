"""The code verifier on chat answers: a fenced block, a reply that starts with code and closes a
fence it never opened, prose around unfenced code, a reply cut off mid-line, example calls that
would fail on their own. Each is checked on a real HumanEval problem through the sandbox, with a
wrong body in the same wrapping as the control (the wrapping alone must not pass)."""

import pytest

from cipo_jax.data.benchmarks import humaneval_tasks
from cipo_jax.verifiers.extract import fenced_code, program_definitions
from cipo_jax.verifiers.table import VERIFIERS


@pytest.fixture(scope="module")
def task():
    # the prompt imports nothing and defines the entry point only; its tests check several cases
    return next(t for t in humaneval_tasks() if t.id == "HumanEval/98")


def function(task, body: str) -> str:
    return task.meta["code_prefix"].lstrip("\n") + body


WRAPPINGS = {
    "fenced": lambda f: f"Here is the function:\n\n```python\n{f}\nprint(count_upper('aBCdEf'))\n```\n\nIt counts.",
    "closing fence only": lambda f: f"{f}\nprint(count_upper('aBCdEf'))  # Output: 1\n```\n\nThis function uses ...",
    "unfenced with prose": lambda f: f"Sure! Here it is:\n{f}\n\nThis function walks the even indices.",
    "cut off": lambda f: f"```python\n{f}\nprint(count_upper('aBCd",
    "failing example asserts": lambda f: f"```python\n{f}\nassert count_upper('x') == 5\ncount_upper(None)\n```",
}


@pytest.mark.parametrize("wrapping", WRAPPINGS)
def test_chat_answer_is_judged_by_its_code(task, wrapping):
    wrap = WRAPPINGS[wrapping]
    right = VERIFIERS["code"](wrap(function(task, task.response)), task.reference, task.meta)
    assert right.reward == 1.0, right
    wrong = VERIFIERS["code"](wrap(function(task, "    return 0\n")), task.reference, task.meta)
    assert wrong.reward == 0.0 and wrong.status == "failed", wrong


def test_completion_answers_are_unchanged(task):
    """A completion body (plain, or followed by a stray closing fence) still runs after the prompt."""
    check = VERIFIERS["code"]
    assert check(task.response, task.reference, task.meta).reward == 1.0
    assert check(task.response + "```\nThat's all.", task.reference, task.meta).reward == 1.0
    assert check("    return 0\n", task.reference, task.meta).reward == 0.0


def test_prompt_imports_reach_a_restated_function():
    """A chat answer that restates a typed function without its imports still runs: the prompt
    (a program on its own) comes first, and the answer's definition replaces the stub."""
    task = next(t for t in humaneval_tasks() if t.id == "HumanEval/0")  # from typing import List
    body = task.meta["code_prefix"].split("def has_close_elements")[1]
    restated = f"```python\ndef has_close_elements{body}{task.response}```"
    assert "import" not in restated
    assert VERIFIERS["code"](restated, task.reference, task.meta).reward == 1.0


def test_fenced_code_picks_the_block_that_defines_the_entry_point():
    text = "```\n$ pip install x\n```\nthen\n```python\ndef f(x):\n    return x\n```\n```python\nf(1)\n```"
    assert fenced_code(text, "f") == "def f(x):\n    return x\n"
    assert fenced_code(text) == "$ pip install x\n"
    assert fenced_code("no fences here") == "no fences here"


def test_program_definitions_keeps_definitions_in_order():
    code = "Text first\nimport math\nN = 3\n\n@staticmethod\ndef g():\n    return N\nprint(g())\nclass C:\n    pass\nassert 0\ndef h("
    assert program_definitions(code) == ("import math\n\nN = 3\n\n@staticmethod\ndef g():\n    return N\n\n"
                                         "class C:\n    pass\n")
    assert program_definitions("(((((") == "((((("  # nothing parses: unchanged (the sandbox reports it)
