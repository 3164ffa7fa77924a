"""`python -m cipo_jax train` end to end on the tiny config: metrics, checkpoints, resume, export."""

import json

import pytest

from cipo_jax.cli import main as cli
from cipo_jax.train.metrics import read_metrics
from cipo_jax.train.runs import checkpoint_steps

pytestmark = pytest.mark.mesh8  # the whole path on the 8-device fsdp mesh

SMALL = ["--config", "tests/small.yaml", "cipo.C=3", "sft.steps=4", "run.log_tensorboard=true"]

REQUIRED = ("reward_mean", "zero_var_frac", "corr_count", "corr_success", "retention", "replay_ratio", "loss_pg",
            "loss_corr", "loss_nll", "kl", "entropy", "clip_frac", "tokens", "step_time", "rollout_tokens_per_s")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    assert cli(["train", *SMALL, f"run.run_dir={d}", "run.steps=2", "--no-progress"]) == 0
    return d


def test_train_writes_metrics_config_and_checkpoints(run_dir):
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    for key in REQUIRED:
        assert key in rows[-1], key
    assert rows[-1]["corr_count"] == 3 * 2
    assert rows[0]["compiles"] == rows[1]["compiles"]  # on the 8-device fsdp mesh, too
    assert (run_dir / "config.yaml").is_file() and (run_dir / "tokenizer.model").is_file()
    assert checkpoint_steps(run_dir) == [0, 1, 2]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 2


def test_train_again_resumes_at_the_next_step(run_dir):
    assert cli(["train", *SMALL, f"run.run_dir={run_dir}", "run.steps=3", "--no-progress"]) == 0
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]  # step 3 only: no SFT again, no repeated steps


def test_export_writes_a_hugging_face_checkpoint(run_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    import numpy as np
    import torch

    from cipo_jax.train.policy import load_policy

    out = tmp_path / "hf"
    assert cli(["export", "--checkpoint", str(run_dir), "--out", str(out)]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    model = load_policy(run_dir).model
    tokens = np.array([[1, 5, 9, 3, 7]], np.int32)
    ours = np.asarray(model(tokens))
    theirs = hf(torch.tensor(tokens, dtype=torch.long)).logits.detach().numpy()
    assert np.max(np.abs(ours - theirs)) <= 1e-4


def test_bad_config_key_is_a_one_line_error(capsys):
    assert cli(["train", "--config", "configs/tiny.yaml", "cipo.lamda_risk=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cipo.lamda_risk" in err and "lambda_risk" in err
