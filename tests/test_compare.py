"""GRPO-vs-CIPO comparison: the equal-token-budget bookkeeping against hand-worked cases, and
the whole command end to end on a tiny two-seed setup."""

import json
import math

import numpy as np
import pytest

from cipo_jax.evaluation.compare import arm_overrides, budget_step, markdown_table, mean_std, summarize, window_mean


def test_budget_step_is_first_step_reaching_budget():
    cum = np.cumsum([100, 100, 150, 50])  # 100, 200, 350, 400
    assert budget_step(cum, 100) == 0
    assert budget_step(cum, 201) == 2
    assert budget_step(cum, 400) == 3
    with pytest.raises(ValueError, match="never reaches the token budget"):
        budget_step(cum, 401)


def test_window_mean_skips_missing_and_clips_at_start():
    values = [1.0, None, 3.0, 5.0, 7.0]
    assert window_mean(values, 4, 2) == 6.0
    assert window_mean(values, 2, 5) == 2.0  # (1 + 3) / 2, the None skipped
    assert math.isnan(window_mean([None, None], 1, 2))


def test_summary_is_mean_and_sample_std():
    rows = {"GRPO": [{"pass@1": 0.2}, {"pass@1": 0.4}, {"pass@1": 0.6}]}
    (m, s), = summarize(rows)["GRPO"].values()
    assert m == pytest.approx(0.4) and s == pytest.approx(0.2)  # sqrt(((.2)^2 + 0 + (.2)^2) / 2)
    assert mean_std([0.5]) == (0.5, 0.0)
    table = markdown_table({"GRPO": {"pass@1": (0.4, 0.2)}, "CIPO": {"pass@1": (0.5, 0.1)}})
    assert "| held-out pass@1 | 0.400 ± 0.200 | 0.500 ± 0.100 |" in table


def test_arm_overrides_replace_the_users_correction_budget():
    user = ["cipo.C=2", "optim.lr=1e-3"]
    assert arm_overrides(user, "GRPO") == ["optim.lr=1e-3", "cipo.C=0"]
    assert arm_overrides(user, "CIPO") == user


@pytest.mark.slow
def test_compare_end_to_end(tmp_path):
    from cipo_jax.cli import main

    out = tmp_path / "cmp"
    rc = main(["compare", "--config", "configs/tiny.yaml", "--seeds", "2", "--steps", "2", "--out", str(out),
               "--n", "2", "--window", "2", "--no-progress",
               "sft.steps=2", "tasks.size=64", "tasks.eval_size=4", "grpo.num_prompts=4", "grpo.group_size=2",
               "cipo.C=2", "cipo.M=2", "model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=1",
               "run.ckpt_every=1", "run.keep_checkpoints=10", "run.log_tensorboard=false"])
    assert rc == 0
    report = json.loads((out / "compare.json").read_text())
    assert (out / "compare.png").stat().st_size > 0 and "Equal steps" in (out / "compare.md").read_text()
    for arm in ("GRPO", "CIPO"):
        assert len(report["per_seed"]["equal_steps"][arm]) == 2
        assert all(row["step"] == 2 for row in report["per_seed"]["equal_steps"][arm])
    # GRPO makes no corrections, so per step it generates fewer tokens; the budget is its total.
    grpo_tokens = [row["tokens"] for row in report["per_seed"]["equal_steps"]["GRPO"]]
    assert report["token_budget"] == min(grpo_tokens + [r["tokens"] for r in report["per_seed"]["equal_steps"]["CIPO"]])
    for row in report["per_seed"]["equal_tokens"]["CIPO"]:
        assert row["tokens"] >= report["token_budget"] and row["eval_step"] <= row["step"]
    cipo_cfg = (out / "cipo-seed0" / "config.yaml").read_text()
    grpo_cfg = (out / "grpo-seed0" / "config.yaml").read_text()
    diff = {a for a, b in zip(cipo_cfg.splitlines(), grpo_cfg.splitlines()) if a != b}
    assert all("C:" in line or "run_dir" in line for line in diff), diff
