"""Task records, the JSONL schema and every load_tasks spec."""

import json
import subprocess
import sys

import numpy as np
import pytest

from cipo_jax.data import Task, load_tasks
from cipo_jax.data.arith import ArithSpec, arith_task, parse_arith_spec
from cipo_jax.verifiers.exact import final_integer
from cipo_jax.data.jsonl import read_jsonl, write_jsonl
from cipo_jax.data.tasks import task_from_dict, to_dict


def _task(i=0, **kw):
    fields = dict(id=f"t{i}", prompt=f"Q{i}", messages=None, reference=str(i), verifier="exact", meta={"k": [i]})
    return Task(**{**fields, **kw})


def test_task_rejects_bad_records():
    with pytest.raises(ValueError, match="exactly one of prompt / messages"):
        _task(messages=({"role": "user", "content": "x"},))
    with pytest.raises(ValueError, match="unknown verifier 'regex'"):
        _task(verifier="regex")
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        _task(meta={"x": object()})
    with pytest.raises(ValueError, match="roles are"):
        _task(prompt=None, messages=({"role": "robot", "content": "x"},))


def test_schema_round_trip_and_both_reference_spellings():
    chat = _task(1, prompt=None, messages=[{"role": "user", "content": "hi"}], verifier="code", response="r")
    for task in (_task(), chat):
        assert task_from_dict(json.loads(json.dumps(to_dict(task)))) == task
    assert "tests" in to_dict(chat) and "answer" in to_dict(_task())


def test_jsonl_round_trip(tmp_path):
    tasks = [_task(i) for i in range(3)]
    write_jsonl(tasks, tmp_path / "t.jsonl")
    assert load_tasks(f"jsonl:{tmp_path / 't.jsonl'}") == tasks


def test_jsonl_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(to_dict(_task()))
    path.write_text(f"{good}\n\n{good}\n{{not json\n")
    with pytest.raises(ValueError, match=rf"{path}:4: "):
        read_jsonl(path)
    path.write_text(f'{good}\n{{"id": "x", "prompt": "p", "answer": "1", "verifier": "nope"}}\n')
    with pytest.raises(ValueError, match=rf"{path}:2: .*unknown verifier"):
        read_jsonl(path)
    path.write_text(f'{{"id": "x", "prompt": "p", "answer": "1", "verifier": "exact", "extra": 1}}\n')
    with pytest.raises(ValueError, match=rf"{path}:1: unknown field"):
        read_jsonl(path)


def test_jsonl_empty_file_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="empty.jsonl: no tasks"):
        load_tasks(f"jsonl:{tmp_path / 'empty.jsonl'}")


def test_unknown_spec_lists_known():
    with pytest.raises(ValueError, match="unknown task spec 'mbpp'; known: jsonl:<path>, tfds:<data_dir>, gym:<name>"):
        load_tasks("mbpp")


def test_humaneval_canonical_solutions_pass_their_tests():
    tasks = load_tasks("humaneval")
    assert len(tasks) == 164 and len({t.id for t in tasks}) == 164
    assert all(t.verifier == "code" and t.response and t.meta["entry_point"] in t.reference for t in tasks)
    # Independent check of the reference format: prompt + canonical body + tests runs clean in Python.
    for task in tasks[:4]:
        program = task.meta["code_prefix"] + task.response + "\n" + task.reference
        subprocess.run([sys.executable, "-c", program], check=True, timeout=30)
    broken = tasks[0].meta["code_prefix"] + "    return None\n" + "\n" + tasks[0].reference
    assert subprocess.run([sys.executable, "-c", broken], capture_output=True, timeout=30).returncode != 0


def test_champ_has_270_problems_with_answers():
    tasks = load_tasks("champ")
    assert len(tasks) == 270 and len({t.id for t in tasks}) == 270
    assert all(t.verifier == "math" and t.reference.strip() and t.reference in t.response for t in tasks)
    subset = load_tasks("champ", size=10, seed=3)
    assert subset == load_tasks("champ", size=10, seed=3) and all(t in tasks for t in subset)


def test_gym_is_deterministic_and_its_reference_scores_full_marks():
    import reasoning_gym

    for name in ("basic_arithmetic", "countdown"):
        tasks = load_tasks(f"gym:{name}", size=5, seed=7)
        assert tasks == load_tasks(f"gym:{name}", size=5, seed=7)
        assert [t.prompt for t in tasks] != [t.prompt for t in load_tasks(f"gym:{name}", size=5, seed=8)]
        assert [t.prompt for t in tasks] != [t.prompt for t in load_tasks(f"gym:{name}", size=5, seed=7, split="test")]
        score = reasoning_gym.get_score_answer_fn(name)
        # meta went through JSON (tuples -> lists) and still scores with the generator's own verifier.
        assert all(score(t.reference, json.loads(json.dumps(t.meta))["entry"]) == 1.0 for t in tasks)
        assert all(score("wrong", t.meta["entry"]) < 1.0 for t in tasks)
    with pytest.raises(ValueError, match="gym: .*not registered"):
        load_tasks("gym:no_such_generator", size=1)


def test_arith_deterministic_and_responses_compute_the_expression():
    tasks = load_tasks("arith:digits=3,operands=4,ops=+-*,cot=1", size=200, seed=5)
    assert tasks == load_tasks("arith:digits=3,operands=4,ops=+-*,cot=1", size=200, seed=5)
    assert tasks[:50] == load_tasks("arith:digits=3,operands=4,ops=+-*,cot=1", size=50, seed=5)
    for task in tasks:
        # Independent reference: evaluate left to right with Python integer arithmetic.
        tokens = task.meta["expression"].replace("+", " + ").replace("-", " - ").replace("*", " * ").split()
        value = int(tokens[0])
        for op, x in zip(tokens[1::2], tokens[2::2]):
            value = eval(f"{value} {op} {x}")
        assert task.reference == str(value) and task.prompt == f"Q: {task.meta['expression']} ="
        assert final_integer(task.response) == value
    assert len({t.meta["operands"] for t in tasks}) == 3 and len({t.meta["digits"] for t in tasks}) == 3


def test_arith_train_and_test_never_share_an_expression():
    spec = ArithSpec(digits=1, operands=2)  # 200 possible expressions: collisions would show
    train = {arith_task(spec, seed, "train", i).prompt for seed in (0, 1) for i in range(600)}
    test = {arith_task(spec, seed, "test", i).prompt for seed in (0, 1) for i in range(200)}
    assert len(train) > 150 and len(test) > 15 and not train & test
    assert load_tasks("arith", size=3, split="eval") == [arith_task(ArithSpec(), 0, "eval", i) for i in range(3)]


def test_arith_bad_options():
    with pytest.raises(ValueError, match="bad option 'digit=2'; known: digits=, operands=, ops=, cot="):
        parse_arith_spec("digit=2")
    with pytest.raises(ValueError, match="ops must be"):
        parse_arith_spec("ops=/")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_tasks("arith", size=1, split="dev")


@pytest.mark.parametrize(
    "text, expected",
    [(" 82", 82), (" -11", -11), (" 3+4=7 7-9=-2 Answer: -2", -2), ("Answer: 5 then 6", 5), ("no digits", None),
     ("Answer: 12\nAnswer: 13", 13), ("= 4 4", 4), ("The answer is: 4 + 6 = 10.", 10),
     ("Answer: -3 (after 10 steps)", -3)],
)
def test_final_integer(text, expected):
    assert final_integer(text) == expected


def test_reference_responses_pass_the_project_verifiers():
    """The formats agree with cipo_jax.verifiers: each loader's reference solution scores 1."""
    from cipo_jax.verifiers.table import lookup

    for spec in ("arith", "arith:cot=1,ops=+-*", "gym:chain_sum", "gym:countdown", "champ"):
        tasks = load_tasks(spec, size=12, seed=1)
        assert all(lookup(t.verifier)(t.response, t.reference, t.meta).reward == 1.0 for t in tasks), spec
        wrong = [lookup(t.verifier)("Answer: 123456789", t.reference, t.meta).reward for t in tasks]
        assert max(wrong) < 1.0, spec
    for task in load_tasks("humaneval", size=2, seed=1):
        verdict = lookup("code")(task.meta["code_prefix"] + task.response, task.reference, task.meta)
        assert verdict.reward == 1.0, verdict


def test_arith_held_out_problems_are_distinct_and_unseen():
    from cipo_jax.data.arith import arith_tasks, parse_arith_spec

    spec = parse_arith_spec("digits=1,operands=4,ops=+")
    test = arith_tasks(spec, 256, seed=0, split="test")
    train = arith_tasks(spec, 4000, seed=0, split="train")
    assert len({t.prompt for t in test}) == 256  # distinct, not draws with repeats
    assert not {t.prompt for t in test} & {t.prompt for t in train}
    with pytest.raises(ValueError, match="only 11 distinct test problems"):
        arith_tasks(parse_arith_spec("digits=1,operands=2,ops=+"), 256, seed=0, split="test")


def test_arith_noise_perturbs_sft_targets_only():
    from cipo_jax.data.arith import arith_tasks, parse_arith_spec
    from cipo_jax.verifiers.exact import final_integer

    clean = arith_tasks(parse_arith_spec("digits=1,operands=3"), 2000)
    noisy = arith_tasks(parse_arith_spec("digits=1,operands=3,noise=0.5"), 2000)
    assert [t.prompt for t in clean] == [t.prompt for t in noisy]
    assert [t.reference for t in clean] == [t.reference for t in noisy]
    off = np.array([final_integer(t.response) - int(t.reference) for t in noisy])
    assert set(off) <= {-2, -1, 0, 1, 2}
    assert abs((off != 0).mean() - 0.5) < 4 * np.sqrt(0.25 / 2000)
    with pytest.raises(ValueError, match="noise must lie in"):
        parse_arith_spec("noise=1.5")
