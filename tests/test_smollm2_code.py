"""configs/smollm2_code.yaml: the real SmolLM2-135M trains 2 CIPO steps on generated HumanEval-form
tasks, every rollout judged by the code sandbox (tiny lengths: this is CI time)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest


@pytest.mark.slow
def test_smollm2_code_runs_two_steps(smollm2_gguf, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [f"run.run_dir={run_dir}", "run.steps=2", "run.ckpt_every=2", "run.log_tensorboard=false",
                 "tasks.size=8", "grpo.num_prompts=2", "grpo.group_size=2", "cipo.C=1", "cipo.M=2",
                 "sampling.max_new_tokens=8", "optim.grad_accum=1"]
    # A process of its own on one CPU device, as a user runs it: the suite's 8 virtual devices
    # would put the 135M model on an 8-way mesh (about 12 GB resident instead of 5).
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-m", "cipo_jax", "train", "--config", "configs/smollm2_code.yaml",
                           *overrides], env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = (run_dir / "config.yaml").read_text()
    assert "codegen:kind=fn" in saved and "source: smollm2" in saved and "feedback: true" in saved
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert np.isfinite(r["loss"]) and r["corr_count"] == 2.0
        # 2 x 2 attempts and 1 x 2 corrections went through the sandbox (+ feedback for a failed source)
        assert r["verify_items"] >= 6 and r["verify_items_per_s"] > 0
