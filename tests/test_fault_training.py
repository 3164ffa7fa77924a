"""Faults inside training steps, on one in-process run:

- a verifier worker that crashes (os._exit) on one item and one that hangs on another: the pool
  replaces them, those samples score 0 with status crashed / timeout, counted in the step's
  metrics (verify_<status>), and the step completes;
- from step 2 on, the sampler's log-probs arrive as NaN (as from a numerically broken rollout):
  the loss is non-finite, the update is skipped and counted, and after run.max_bad_steps in a
  row training stops with an error naming the last good checkpoint, whose parameters are the
  ones from before the first bad step.
"""

import json
import os
import time
from functools import partial
from pathlib import Path

import jax
import numpy as np
import pytest

from cipo_jax.verifiers.table import STATUSES, VERIFIERS, Verdict

MAX_BAD = 2


def faulty_exact(response: str, reference: str, meta: dict | None) -> Verdict:
    """The exact verifier, except that the first item to claim meta['crash'] kills its worker
    process and the first to claim meta['hang'] never returns (claims are files, shared by all
    workers, so each fault happens exactly once in the run)."""
    for fault in ("crash", "hang"):
        try:
            os.close(os.open(meta[fault], os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            continue
        if fault == "crash":
            os._exit(13)
        time.sleep(3600)
    return VERIFIERS["exact"](response, reference, meta)


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    from cipo_jax import verifiers
    from cipo_jax.config import load_config
    from cipo_jax.train import rollout, trainer
    from cipo_jax.train.metrics import read_metrics

    tmp = tmp_path_factory.mktemp("faulty")
    tasks = tmp / "tasks.jsonl"
    with tasks.open("w") as f:
        for i in range(32):
            f.write(json.dumps({"id": f"t{i}", "prompt": f"{i} + 1 =", "answer": str(i + 1), "verifier": "exact",
                                "meta": {"crash": str(tmp / "crash.claim"), "hang": str(tmp / "hang.claim")}}) + "\n")
    cfg = load_config(Path(__file__).with_name("small.yaml"), [
        f"run.run_dir={tmp / 'run'}", "run.steps=6", "run.keep_checkpoints=5", f"run.max_bad_steps={MAX_BAD}",
        "run.verify_timeout_s=3", f"tasks.spec=jsonl:{tasks}", "tasks.size=32", "sft.steps=0",
        "sampling.max_new_tokens=4", "model.vocab_size=64", "model.intermediate_size=384"])

    mp = pytest.MonkeyPatch()
    mp.setattr(verifiers, "VerifierPool", partial(verifiers.VerifierPool, table={"exact": faulty_exact}))
    verdicts = []  # (rewards, statuses) of every batch the trainer scored
    score = rollout.RolloutWorker.score

    def recording_score(self, tasks, texts):
        rewards, statuses = score(self, tasks, texts)
        verdicts.append((rewards, statuses))
        return rewards, statuses

    mp.setattr(rollout.RolloutWorker, "score", recording_score)
    rl_step, pack_rows = trainer.Trainer.rl_step, trainer.pack_rows
    steps_done = []  # RL steps completed when the current one began

    def tracking_rl_step(self, worker):
        steps_done.append(self.progress.step)
        return rl_step(self, worker)

    def nan_logprobs_after_first_step(*args, **kwargs):
        packed = pack_rows(*args, **kwargs)
        if steps_done and steps_done[-1] >= 1:
            packed["old_logp"] = np.full_like(packed["old_logp"], np.nan)
        return packed

    mp.setattr(trainer.Trainer, "rl_step", tracking_rl_step)
    mp.setattr(trainer, "pack_rows", nan_logprobs_after_first_step)
    error = None
    try:
        trainer.train(cfg, progress_bar=False)
    except trainer.TrainingError as e:
        error = e
    finally:
        mp.undo()
    return {"error": error, "verdicts": verdicts, "rows": read_metrics(tmp / "run"), "run_dir": tmp / "run"}


@pytest.mark.slow
def test_verifier_crash_and_hang_score_zero_and_are_counted(faulty_run):
    rewards, statuses = faulty_run["verdicts"][0]  # step 1's attempts
    assert sorted(s for s in statuses if s in ("crashed", "timeout")) == ["crashed", "timeout"]
    assert all(r == 0.0 for r, s in zip(rewards, statuses) if s in ("crashed", "timeout"))
    step1 = faulty_run["rows"][0]
    assert step1["step"] == 1 and step1["verify_crashed"] == 1.0 and step1["verify_timeout"] == 1.0
    assert step1["skipped_updates"] == 0.0  # the step itself completed normally
    # Every verdict of the step is counted once: its attempts, then its corrections.
    counted = sum(step1.get(f"verify_{status}", 0.0) for status in STATUSES)
    assert counted == len(statuses) + len(faulty_run["verdicts"][1][1])


@pytest.mark.slow
def test_non_finite_updates_skipped_counted_then_stop(faulty_run):
    from cipo_jax.train.checkpoint import Checkpointer

    error, rows, run_dir = faulty_run["error"], faulty_run["rows"], faulty_run["run_dir"]
    assert error is not None, "training should stop after consecutive non-finite updates"
    last_good = run_dir / "checkpoints" / str(MAX_BAD)
    assert str(error) == (f"{MAX_BAD} consecutive updates had a non-finite loss or gradient; stopping "
                          f"(last good checkpoint: {last_good})")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["skipped_updates"] for r in rows] == [0.0, 1.0, 1.0]
    assert rows[1]["loss"] is None  # NaN is written as null
    ckpt = Checkpointer(run_dir / "checkpoints", async_save=False)
    try:
        assert ckpt.steps()[-1] == MAX_BAD  # nothing saved for the step that stopped the run
        # Read as saved, not into the trainer's layout, where fingerprints are not comparable.
        params = {s: ckpt.read(s, verify=False)[0]["state"]["params"] for s in (1, MAX_BAD)}
        meta = ckpt.read(MAX_BAD, verify=False)[1]
    finally:
        ckpt.close()
    assert meta["progress"]["bad_steps"] == 1 and meta["progress"]["skipped_total"] == 1
    # The skipped update left the parameters of step 1 untouched, and they are finite.
    for a, b in zip(jax.tree.leaves(params[1]), jax.tree.leaves(params[MAX_BAD])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.isfinite(np.asarray(a)).all()
