"""The catalogue of docs/errors.md: each bad input to `python -m cipo_jax train` ends the command
with exit code 2 and ONE stderr line naming the problem, before any training work."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cipo_jax import cli
from cipo_jax.train.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs/tiny.yaml")
SMALL = ["sft.steps=0", "tasks.size=50", "model.hidden_size=64", "run.log_tensorboard=false"]


def run_train(capsys, tmp_path, config: str = TINY, *overrides: str) -> tuple[int, str]:
    code = cli.main(["train", "--config", config, f"run.run_dir={tmp_path / 'run'}", *SMALL, *overrides,
                     "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_malformed_yaml(capsys, tmp_path):
    code, line = run_train(capsys, tmp_path, write(tmp_path / "bad.yaml", "run:\n  steps: [1,\n"))
    assert code == 2 and line.startswith("config error: malformed YAML in ") and "bad.yaml" in line


def test_missing_config_file(capsys, tmp_path):
    code, line = run_train(capsys, tmp_path, str(tmp_path / "nope.yaml"))
    assert code == 2 and line == f"config error: config file not found: {tmp_path / 'nope.yaml'}"


def test_unknown_key_names_it_and_suggests(capsys, tmp_path):
    code, line = run_train(capsys, tmp_path, write(tmp_path / "bad.yaml", "run:\n  stepz: 3\n"))
    assert code == 2 and "unknown config key 'run.stepz'" in line and "did you mean 'steps'" in line


def test_wrong_type(capsys, tmp_path):
    code, line = run_train(capsys, tmp_path, TINY, "run.steps=three")
    assert (code, line) == (2, "config error: run.steps: expected an integer, got 'three'")


def test_bad_choice(capsys, tmp_path):
    code, line = run_train(capsys, tmp_path, TINY, "run.resume=sometimes")
    assert (code, line) == (2, "config error: run.resume: 'sometimes' is not one of ['auto', 'require', 'never']")


def test_missing_model_files(capsys, tmp_path):
    code, line = run_train(capsys, tmp_path, TINY, f"model.source=hf:{tmp_path / 'no_model'}")
    assert code == 2 and line.startswith("error: FileNotFoundError: model.source hf:") and "does not exist" in line


def test_weight_shape_mismatch(capsys, tmp_path):
    """An HF directory whose config.json disagrees with its safetensors shapes."""
    from cipo_jax.models import init_model, save_hf, tiny_config

    model_dir = tmp_path / "hf"
    save_hf(init_model(tiny_config(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                                   num_kv_heads=1, head_dim=16), seed=0), model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["intermediate_size"] = 96
    (model_dir / "config.json").write_text(json.dumps(config))
    code, line = run_train(capsys, tmp_path, TINY, f"model.source=hf:{model_dir}",
                           f"tasks.tokenizer=sp:{spm_model(tmp_path)}")
    assert code == 2 and line.startswith("error: WeightError: ") and "shape" in line


def spm_model(tmp_path: Path) -> Path:
    from cipo_jax.data.load import load_tasks
    from cipo_jax.data.spm_train import task_corpus, train_sentencepiece

    path = tmp_path / "sp.model"
    train_sentencepiece(task_corpus(load_tasks("arith", size=50, seed=0, split="train")), 64, path)
    return path


def test_empty_task_file(capsys, tmp_path):
    empty = write(tmp_path / "empty.jsonl", "\n")
    code, line = run_train(capsys, tmp_path, TINY, f"tasks.spec=jsonl:{empty}")
    assert (code, line) == (2, f"error: ValueError: {empty}: no tasks (the file is empty)")


def test_bad_task_line_names_file_and_line(capsys, tmp_path):
    bad = write(tmp_path / "bad.jsonl", json.dumps({"id": "a", "prompt": "1+1", "answer": "2", "verifier": "exact"})
                + "\n{not json\n")
    code, line = run_train(capsys, tmp_path, TINY, f"tasks.spec=jsonl:{bad}")
    assert code == 2 and line.startswith(f"error: ValueError: {bad}:2: ")


def test_prompt_longer_than_context(capsys, tmp_path):
    long = write(tmp_path / "long.jsonl", json.dumps({"id": "long", "prompt": " ".join(["7 + 8"] * 60),
                                                     "answer": "15", "verifier": "exact"}) + "\n")
    code, line = run_train(capsys, tmp_path, TINY, f"tasks.spec=jsonl:{long}", "model.max_position_embeddings=64")
    assert code == 2 and line.startswith("error: ValueError: task 'long': prompt of ") \
        and "exceeds the model context of 64 tokens" in line


def test_correction_prompt_longer_than_context(capsys, tmp_path):
    code, line = run_train(capsys, tmp_path, TINY, "model.max_position_embeddings=40", "sampling.max_new_tokens=8")
    assert code == 2 and "a correction prompt" in line and "over the model context of 40" in line


@pytest.mark.mesh8
def test_mesh_does_not_divide_devices(capsys, tmp_path):
    code, line = run_train(capsys, tmp_path, TINY, "mesh.data=3")
    assert (code, line) == (2, "error: ValueError: mesh (3, -1, 1) does not divide 8 devices")


def test_resume_required_without_checkpoint(capsys, tmp_path):
    code, line = run_train(capsys, tmp_path, TINY, "run.resume=require")
    assert (code, line) == (2, f"error: run.resume=require but {tmp_path / 'run' / 'checkpoints'} has no checkpoint")


def test_resume_never_with_checkpoints(capsys, tmp_path):
    ckpt = Checkpointer(tmp_path / "run" / "checkpoints", async_save=False)
    import jax.numpy as jnp

    ckpt.save(5, {"x": jnp.zeros(3)}, {}, force=True)
    ckpt.close()
    code, line = run_train(capsys, tmp_path, TINY, "run.resume=never")
    assert code == 2 and line.startswith("error: run.resume=never but ") and "(steps [5])" in line


def test_unwritable_run_dir(capsys, tmp_path):
    """Root ignores permission bits, so the run dir is placed under a regular file instead."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = cli.main(["train", "--config", TINY, f"run.run_dir={blocker / 'run'}", *SMALL, "--no-progress"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert (code, line) == (2, f"error: run directory {blocker / 'run'} is not writable: Not a directory")


def test_real_cli_exit_code_and_single_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cipo_jax", "train", "--config", TINY, "optim.lrr=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "config error: unknown config key 'optim.lrr'; did you mean 'lr'? valid keys: b1, b2, grad_accum, grad_clip, "
        "lr, minibatches, schedule, warmup_steps, weight_decay"]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv", [["train"], ["train", "--config"]])
def test_missing_arguments_are_usage_errors(argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
