"""`python -m cipo_jax eval` on a tiny trained run, checked against an independent greedy
decode scored with the arithmetic answer rule; the same policy exported as a Hugging Face
directory evaluates identically; bad checkpoints are one-line errors."""

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
    printed = capsys.readouterr()
    assert "pass@4" in printed.out
    assert "eval: 100%" in printed.err and "96/96" in printed.err  # progress: 16 x (4 samples + 2 attempts) rows
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
    assert err == (f"eval: {tmp_path} is not a cipo_jax run directory (no config.yaml) "
                   f"nor a Hugging Face directory (no config.json)")


def test_eval_cli_bad_model_paths_are_one_line_errors(tmp_path, capsys):
    forms = "give a run directory (config.yaml), a Hugging Face directory (config.json), a .gguf file or 'smollm2'"
    missing = tmp_path / "nowhere.gguf"
    assert main(["eval", "--checkpoint", str(missing), "--tasks", "champ"]) == 2
    assert capsys.readouterr().err.strip() == f"eval: {missing} does not exist; {forms}"
    text = tmp_path / "model.gguf"
    text.write_text("not a model")
    assert main(["eval", "--checkpoint", str(text), "--tasks", "champ"]) == 2
    assert capsys.readouterr().err.strip() == f"eval: {text} is not a GGUF file (it starts with b'not ', not b'GGUF'); {forms}"


def test_eval_cli_model_without_run_needs_tasks_and_has_no_steps(smollm2_gguf, capsys):
    assert main(["eval", "--checkpoint", str(smollm2_gguf)]) == 2
    assert capsys.readouterr().err.strip() == (f"eval: gguf:{smollm2_gguf} is not a run: name the tasks with --tasks "
                                               "(e.g. humaneval, champ, gym:chain_sum)")
    assert main(["eval", "--checkpoint", "smollm2", "--tasks", "champ", "--step", "3"]) == 2
    assert capsys.readouterr().err.strip() == "eval: --step applies to a run directory; smollm2 is a model without steps"


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


@pytest.mark.slow
def test_eval_of_an_exported_directory_equals_eval_of_its_run(tiny_run, tmp_path):
    """The same policy reached two ways (the run's checkpoint, and `export` of it as a Hugging Face
    directory with its sentencepiece tokenizer) gives the same evaluation at the same settings."""
    export = tmp_path / "hf"
    assert main(["export", "--checkpoint", str(tiny_run), "--step", "1", "--out", str(export)]) == 0
    same = ["--n", "4", "--size", "12", "--temperature", "1.0", "--max-new-tokens", "32", "--rows-per-call", "512"]
    assert main(["eval", "--checkpoint", str(tiny_run), "--step", "1", *same, "--out", str(tmp_path / "run.json")]) == 0
    assert main(["eval", "--checkpoint", str(export), "--tasks", "arith:digits=1,operands=3,ops=+", *same,
                 "--out", str(tmp_path / "hf.json")]) == 0
    run, hf = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("run", "hf"))
    assert hf["checkpoint"] == f"hf:{export}" and hf["settings"] == run["settings"]
    for key in ("pass_at_k", "self_correction", "per_problem", "pass_at_k_se"):
        assert hf[key] == run[key], key


def test_export_bad_checkpoint_is_one_line_error(tmp_path, capsys):
    text = tmp_path / "weights.bin"
    text.write_text("nope")
    assert main(["export", "--checkpoint", str(text), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: ValueError: {text} is not a GGUF file")
    assert not (tmp_path / "hf").exists()
