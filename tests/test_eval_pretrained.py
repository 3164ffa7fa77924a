"""`python -m cipo_jax eval` on the SmolLM2-135M-Instruct GGUF directly (no training run): a few
HumanEval problems through the code sandbox and a few CHAMP problems through the math verifier,
in the model's own chat template, with the self-correction turn. Tiny budgets: this is CI time."""

import json

import pytest

from cipo_jax.cli import main


def check_result(result, *, tasks: str, checkpoint: str):
    assert result["checkpoint"] == checkpoint and result["tasks"] == tasks and result["step"] is None
    assert result["num_problems"] == 3 and result["num_distinct_problems"] == 3
    s = result["settings"]
    assert (s["n"], s["max_new_tokens"], s["rounds"], s["chat"]) == (2, 32, 2, True)  # chat: the GGUF's template
    assert set(result["pass_at_k"]) == set(result["pass_at_k_se"]) == {"1", "2"}
    assert set(result["self_correction"]) == set(result["self_correction_se"]) == \
        {"acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i"}
    for value in [*result["pass_at_k"].values(), *result["pass_at_k_se"].values(),
                  *result["self_correction_se"].values()]:
        assert 0.0 <= value <= 1.0
    pp = result["per_problem"]
    assert len(pp["correct"]) == len(pp["t1"]) == len(pp["t2"]) == 3 and pp["n"] == 2
    assert result["pass_at_k"]["1"] == pytest.approx(sum(pp["correct"]) / 6)
    assert result["self_correction"]["acc_t2"] == pytest.approx(sum(pp["t2"]) / 3)


@pytest.mark.slow
def test_eval_gguf_on_humaneval_and_champ(smollm2_gguf, tmp_path, capsys):
    small = ["--size", "3", "--n", "2", "--max-new-tokens", "32"]
    out = tmp_path / "humaneval.json"
    assert main(["eval", "--checkpoint", str(smollm2_gguf), "--tasks", "humaneval", *small, "--out", str(out)]) == 0
    check_result(json.loads(out.read_text()), tasks="humaneval", checkpoint=f"gguf:{smollm2_gguf}")
    printed = capsys.readouterr().out
    assert "humaneval (test split), 3 problems, n=2" in printed and "pass@2" in printed and "±" in printed

    out = tmp_path / "champ.json"
    assert main(["eval", "--checkpoint", "smollm2", "--tasks", "champ", *small, "--out", str(out)]) == 0
    check_result(json.loads(out.read_text()), tasks="champ", checkpoint="smollm2")
