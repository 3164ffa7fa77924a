"""Preemption and crashes of `python -m cipo_jax train`, end to end in subprocesses.

One uninterrupted reference run of N steps, and one run that is stopped by SIGTERM (the spot
preemption path: finish the step, checkpoint, exit 0), resumed, killed with SIGKILL at a random
moment (no chance to save), and resumed again. Both must end with bitwise identical parameters
and identical metrics rows (timing keys excepted): everything a step depends on is in the
checkpoint or derived from (seed, step).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cipo_jax.train.checkpoint import Checkpointer
from cipo_jax.train.metrics import is_timing

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4


def easy_tasks(path: Path) -> Path:
    """Copy-the-digit tasks: a few SFT steps make some rollouts right, so rewards vary, the
    policy gradient is non-zero and parameters really move between steps."""
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(64):
            a = rng.randint(0, 9)
            f.write(json.dumps({"id": f"e{i}", "prompt": f"Copy the digit {a} {a} {a}. Answer:", "answer": str(a),
                                "verifier": "exact", "response": f" {a}"}) + "\n")
    return path


def overrides(run_dir: Path, tasks: Path) -> list[str]:
    """On top of tests/small.yaml."""
    return [f"run.run_dir={run_dir}", f"run.steps={STEPS}", "run.keep_checkpoints=2", "sft.steps=10",
            "sft.batch_size=64", f"tasks.spec=jsonl:{tasks}", "tasks.size=64", "sampling.max_new_tokens=4",
            "model.vocab_size=64", "model.intermediate_size=384"]


def start(run_dir: Path, tasks: Path, *extra: str) -> subprocess.Popen:
    """`extra` overrides replace the defaults of the same keys."""
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache"))
    cmd = [sys.executable, "-m", "cipo_jax", "train", "--config", str(ROOT / "tests/small.yaml"),
           *merged(overrides(run_dir, tasks), extra), "--no-progress"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def merged(base: list[str], extra: tuple[str, ...]) -> list[str]:
    keys = {e.split("=", 1)[0] for e in extra}
    return [b for b in base if b.split("=", 1)[0] not in keys] + list(extra)


def rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            pass
    return out


def wait_for_rows(proc: subprocess.Popen, run_dir: Path, n: int, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while len(rows(run_dir)) < n:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no metrics row {n} after {timeout_s} s")
        time.sleep(0.05)


def finish(proc: subprocess.Popen, timeout_s: float = 900) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, out, err


def final_params(run_dir: Path) -> dict[str, np.ndarray]:
    """The newest checkpoint's arrays as NumPy, read as saved (not via the trainer). Restored
    without the trainer's target layout, arrays come back laid out differently from how their
    fingerprints were taken, so the bitwise comparison below is the check here."""
    ckpt = Checkpointer(run_dir / "checkpoints", async_save=False)
    try:
        step = ckpt.steps()[-1]
        arrays, _ = ckpt.read(step, verify=False)
    finally:
        ckpt.close()
    import jax

    flat = jax.tree_util.tree_flatten_with_path(arrays)[0]
    return {"step": step, **{jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}}


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not is_timing(k)}


@pytest.mark.slow
def test_sigterm_then_sigkill_then_resume_is_bitwise_identical(tmp_path):
    tasks = easy_tasks(tmp_path / "easy.jsonl")
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "interrupted"

    rc, _, err = finish(start(ref_dir, tasks))
    assert rc == 0, err[-2000:]
    assert [r["step"] for r in rows(ref_dir)] == list(range(1, STEPS + 1))

    # Preemption: SIGTERM while step 2 runs (sampling / verifying / compiling its shapes).
    proc = start(run_dir, tasks)
    wait_for_rows(proc, run_dir, 1)
    proc.send_signal(signal.SIGTERM)
    rc, out, err = finish(proc)
    assert rc == 0, err[-2000:]
    stopped_at = len(rows(run_dir))
    assert f"stopped by signal {int(signal.SIGTERM)} at step {stopped_at}" in out
    assert 1 <= stopped_at < STEPS
    ckpts = Checkpointer(run_dir / "checkpoints", async_save=False)
    assert ckpts.steps()[-1] == stopped_at  # the checkpoint of the step it was on
    ckpts.close()

    # Crash: SIGKILL at a random moment of the next step (maybe after its metrics row was
    # written but before its checkpoint: that row must not appear twice).
    proc = start(run_dir, tasks)
    wait_for_rows(proc, run_dir, stopped_at + 1)
    time.sleep(random.Random().uniform(0.0, 1.0))
    proc.kill()
    proc.communicate()

    rc, _, err = finish(start(run_dir, tasks))
    assert rc == 0, err[-2000:]

    want, got = rows(ref_dir), rows(run_dir)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    assert [comparable(r) for r in got] == [comparable(r) for r in want]
    assert any(r["grad_norm"] for r in want), "parameters never moved: the comparison would be vacuous"
    ref, res = final_params(ref_dir), final_params(run_dir)
    assert ref["step"] == res["step"] == STEPS and ref.keys() == res.keys()
    for key in ref:
        np.testing.assert_array_equal(res[key], ref[key], err_msg=key)


@pytest.mark.slow
def test_sigint_during_sft_exits_cleanly_without_a_checkpoint(tmp_path):
    """Ctrl-C while the SFT warm start runs: exit 0, nothing saved (the rerun redoes SFT)."""
    tasks = easy_tasks(tmp_path / "easy.jsonl")
    run_dir = tmp_path / "run"
    proc = start(run_dir, tasks, "sft.steps=400")
    sft_rows = run_dir / "sft_metrics.jsonl"
    deadline = time.monotonic() + 900
    while not (sft_rows.exists() and sft_rows.read_text().count("\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "SFT never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    rc, out, err = finish(proc)
    assert rc == 0, err[-2000:]
    assert f"stopped by signal {int(signal.SIGINT)} at step 0" in out
    assert sft_rows.read_text().count("\n") < 400
    assert Checkpointer(run_dir / "checkpoints", async_save=False).steps() == []


def test_truncate_metrics_drops_unsaved_rows_and_a_torn_line(tmp_path):
    from cipo_jax.train.metrics import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    truncate_metrics(path, 3)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
    truncate_metrics(tmp_path / "absent.jsonl", 3)  # nothing to do
    assert not (tmp_path / "absent.jsonl").exists()
