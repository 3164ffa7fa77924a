"""The demo end to end (shortened), and run reproducibility: one seed, one set of metrics."""

import json

import pytest

from cipo_jax.demo import DEFAULT_CONFIG, run_demo
from cipo_jax.train.metrics import is_timing

SMALL = ["sft.steps=20", "run.steps=2", "run.ckpt_every=2", "tasks.size=256", "tasks.eval_size=8",
         "grpo.num_prompts=4", "grpo.group_size=2", "cipo.C=2", "cipo.M=2", "model.hidden_size=32",
         "model.intermediate_size=64", "model.num_layers=1"]


@pytest.mark.slow
def test_demo_end_to_end_shortened(tmp_path):
    results = run_demo(DEFAULT_CONFIG, SMALL, run_dir=tmp_path / "demo", n=2, progress=False)
    on_disk = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert on_disk["before"]["step"] == 0 and on_disk["after"]["step"] == 2
    for side in ("before", "after"):
        assert set(on_disk[side]["pass_at_k"]) == {"1", "2"}
        assert on_disk[side]["num_problems"] == 8
        assert set(on_disk[side]["self_correction"]) == {"acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i"}
    assert (tmp_path / "demo" / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["after"] == on_disk["after"]


@pytest.mark.slow
def test_same_seed_reproduces_metrics(tmp_path):
    from cipo_jax.config import load_config
    from cipo_jax.train.metrics import read_metrics
    from cipo_jax.train.trainer import train

    rows = []
    for name in ("a", "b"):
        overrides = [o for o in SMALL if not o.startswith("run.steps=")] + ["run.steps=3"]
        cfg = load_config(DEFAULT_CONFIG, [*overrides, f"run.run_dir={tmp_path / name}"])
        train(cfg, progress_bar=False)
        rows.append([{k: v for k, v in r.items() if not is_timing(k)} for r in read_metrics(tmp_path / name)])
    assert len(rows[0]) == 3 and "reward_mean" in rows[0][0] and "tokens" in rows[0][0]
    assert rows[0] == rows[1]
    sft = [[{k: v for k, v in json.loads(line).items() if not is_timing(k)}
            for line in (tmp_path / name / "sft_metrics.jsonl").read_text().splitlines()] for name in ("a", "b")]
    assert sft[0] == sft[1] and sft[0]
