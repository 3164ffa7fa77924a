"""The prompts of a CIPO step (CIPO.md steps 1 and 5): x, and the correction turn c = T(x, y),
built in one place for training and evaluation.

Chat tasks (or any task rendered with chat=True) get a second user turn:

    [*original messages, {"role": "assistant", "content": attempt}, {"role": "user", "content": template}]

Plain-text tasks get the attempt appended to the prompt, the template on its own line, and the
original prompt again as the cue, so the corrected answer has the same form as a first answer:

    "Q: 7+32 = 38\\nReview your previous solution. ...\\nQ: 7+32 ="

With execution feedback (cipo.feedback), the template is followed by the verifier's reason on a
new line ("Feedback: case 0: wrong_answer; input '3\\n', expected '10\\n', got '9\\n'").

The prefix construction (cipo.construction=prefix) has no template: its prompt is x followed by
the kept prefix of the attempt's own tokens, and the model continues from there.

`render_prompt` / `render_correction` return token ids ready for the sampler (generation prompt
included). The attempt is the decoded completion without its EOS token. A `Request` names one
of the three (the algorithm in `cipo/step.py` asks for requests; the sampler glue renders them).
"""

from __future__ import annotations

from dataclasses import dataclass

from cipo_jax.data.tasks import Task
from cipo_jax.data.tokenizer import Tokenizer


@dataclass(frozen=True)
class Request:
    """What to sample from: a first attempt at `task` (attempt and prefix None), a correction of
    `attempt` (with the verifier's `feedback` when given), or a continuation of `prefix` (token ids
    of the start of an attempt, appended to the task's prompt)."""

    task: Task
    attempt: str | None = None
    feedback: str = ""
    prefix: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.attempt is not None and self.prefix is not None:
            raise ValueError(f"task {self.task.id!r}: a request continues a prefix or corrects an attempt, not both")


def correction_turn(template: str, feedback: str = "") -> str:
    """The correction instruction, with the verifier's feedback when there is any."""
    return f"{template}\nFeedback: {feedback}" if feedback else template


def task_messages(task: Task) -> list[dict[str, str]]:
    """The task as chat messages: its own, or its plain prompt as one user turn."""
    if task.messages is not None:
        return [dict(m) for m in task.messages]
    return [{"role": "user", "content": task.prompt}]


def correction_messages(task: Task, attempt: str, template: str) -> list[dict[str, str]]:
    return [*task_messages(task), {"role": "assistant", "content": attempt}, {"role": "user", "content": template}]


def correction_prompt_text(task: Task, attempt: str, template: str) -> str:
    return f"{_plain_prompt(task)}{attempt}\n{template}\n{task.prompt}"


def _plain_prompt(task: Task) -> str:
    if task.prompt is None:
        raise ValueError(f"task {task.id!r} is given as chat messages; render it with chat=True")
    return task.prompt


def render_prompt(task: Task, tokenizer: Tokenizer, *, chat: bool) -> list[int]:
    if chat:
        return tokenizer.encode(tokenizer.apply_chat_template(task_messages(task), add_generation_prompt=True))
    return tokenizer.encode(_plain_prompt(task), add_bos=tokenizer.add_bos)


def render_correction(task: Task, attempt_text: str, tokenizer: Tokenizer, *, chat: bool, template: str) -> list[int]:
    if chat:
        messages = correction_messages(task, attempt_text, template)
        return tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    return tokenizer.encode(correction_prompt_text(task, attempt_text, template), add_bos=tokenizer.add_bos)


def render(request: Request, tokenizer: Tokenizer, *, chat: bool, template: str) -> list[int]:
    """Token ids of a request's prompt: x for a first attempt, T(x, y) for a correction, x + the
    prefix for a continuation."""
    if request.prefix is not None:
        return render_prompt(request.task, tokenizer, chat=chat) + list(request.prefix)
    if request.attempt is None:
        return render_prompt(request.task, tokenizer, chat=chat)
    return render_correction(request.task, request.attempt, tokenizer, chat=chat,
                             template=correction_turn(template, request.feedback))
