"""`python -m cipo_jax eval` on a tiny trained run, checked against an independent greedy
decode scored with the arithmetic answer rule."""

import json

import numpy as np
import pytest

from cipo_jax.cli import main

TINY = ["sft.steps=30", "tasks.size=256", "grpo.num_prompts=4", "grpo.group_size=2", "cipo.C=2", "cipo.M=2",
        "model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=1", "run.log_tensorboard=false",
        "tasks.spec=arith:digits=1,operands=3,ops=+"]  # >= 100 distinct held-out problems


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from cipo_jax.config import load_config
    from cipo_jax.train.trainer import train

    run_dir = tmp_path_factory.mktemp("run")
    train(load_config("configs/tiny.yaml", [*TINY, "run.steps=1", f"run.run_dir={run_dir}"]), progress_bar=False)
    return run_dir


@pytest.mark.slow
def test_eval_cli_matches_independent_greedy_scoring(tiny_run, tmp_path, capsys):
    from cipo_jax.verifiers.exact import final_integer
    from cipo_jax.data.load import load_tasks
    from cipo_jax.sampling import generate
    from cipo_jax.train.policy import load_policy

    out = tmp_path / "eval.json"
    # Temperature 0: all n samples are the greedy answer, so every pass@k equals the greedy accuracy.
    assert main(["eval", "--checkpoint", str(tiny_run), "--n", "4", "--size", "16", "--temperature", "0",
                 "--step", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "pass@4" in capsys.readouterr().out
    model, tok, cfg, _ = load_policy(tiny_run, 1)
    tasks = load_tasks(cfg.tasks.spec, size=16, seed=cfg.tasks.seed, split="test")
    res = generate(model, [tok.encode(t.prompt, add_bos=tok.add_bos) for t in tasks], max_new_tokens=8,
                   temperature=0.0, stop_tokens=(tok.eos_id,))
    answers = [final_integer(tok.decode([i for i in ids if i != tok.eos_id])) for ids in res.tokens]
    greedy_acc = np.mean([a == int(t.reference) for a, t in zip(answers, tasks)])
    assert result["pass_at_k"] == pytest.approx({"1": greedy_acc, "2": greedy_acc, "4": greedy_acc})
    assert result["self_correction"]["acc_t1"] == pytest.approx(greedy_acc)
    sc = result["self_correction"]
    assert sc["delta"] == pytest.approx(sc["delta_i2c"] - sc["delta_c2i"])
    assert result["num_problems"] == 16 and result["step"] == 1


@pytest.mark.slow
def test_eval_cli_sampled_pass_at_k_is_monotone(tiny_run, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(tiny_run), "--n", "8", "--size", "8", "--step", "0",
                 "--first-attempt", "sampled", "--out", str(out)]) == 0
    curve = json.loads(out.read_text())["pass_at_k"]
    values = [curve[k] for k in ("1", "2", "4", "8")]
    assert values == sorted(values) and 0.0 <= values[0] and values[-1] <= 1.0


def test_eval_cli_bad_checkpoint_is_one_line_error(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"eval: {tmp_path} is not a cipo_jax run directory (no config.yaml)"


@pytest.mark.slow
def test_eval_cli_bad_n_is_one_line_error(tiny_run, capsys):
    assert main(["eval", "--checkpoint", str(tiny_run), "--n", "0"]) == 2
    assert capsys.readouterr().err.strip() == "eval: n (samples per problem) must be >= 1, got 0"


@pytest.mark.slow
def test_curve_points_agree_with_eval(tiny_run, tmp_path):
    """Every checkpoint on the same problems: step 0's change is exactly 0, and each later
    point's paired change is its pass@1 minus step 0's (what `eval` gives at the same seed)."""
    assert main(["curve", "--run", str(tiny_run), "--size", "8", "--train-size", "8", "--n", "2",
                 "--png", str(tmp_path / "c.png")]) == 0
    curve = json.loads((tiny_run / "curve.json").read_text())
    test = curve["points"]["test"]
    assert [p["step"] for p in test] == [0, 1] and len(curve["points"]["train"]) == 2
    assert test[0]["pass@1_change"] == {"diff": 0.0, "ci95": [0.0, 0.0], "se": 0.0}
    assert test[1]["pass@1_change"]["diff"] == pytest.approx(test[1]["pass@1"] - test[0]["pass@1"])
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(tiny_run), "--n", "2", "--size", "8", "--step", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert test[1]["pass@1"] == pytest.approx(result["pass_at_k"]["1"])
    assert result["pass_at_k_se"]["1"] == pytest.approx(test[1]["pass@1_se"])
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
