"""The real-model recipe runs, and its export is what transformers reproduces.

One run of `configs/smollm2_arith.yaml` (the SmolLM2-135M-Instruct recipe) for 2 CIPO steps at
small batch shapes, after one SFT step (so every weight moves even when a small RL batch has no
reward variance: the export is not the GGUF read back). `python -m cipo_jax export` then writes
a Hugging Face directory, and transformers, loading only that directory (offline), renders the
chat prompts with the exported chat template to the same ids as ours and greedy-generates exactly
the 32 tokens our sampler generates from the run's checkpoint."""

import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

# The recipe as shipped, at 2 steps and small batches: the config path and every step phase run.
# remat full: SFT followed by RL at the recipe's remat none peaks above 16 GB on CPU (the RL-only
# recipe stays near 8.5 GB); with it this run peaks at 8.7 GB.
RECIPE = "configs/smollm2_arith.yaml"
RECIPE_OVERRIDES = ["run.steps=2", "run.ckpt_every=2", "run.log_tensorboard=false", "tasks.size=64",
                    "grpo.num_prompts=2", "grpo.group_size=2", "cipo.C=1", "cipo.M=1", "optim.grad_accum=1",
                    "sampling.max_new_tokens=16", "sft.steps=1", "sft.batch_size=2", "sft.lr=5.0e-5", "model.remat=full"]

CONVERSATIONS = [
    [{"role": "user", "content": "What is 12 * 7? Explain briefly."}],
    [{"role": "user", "content": "Write a Python function that reverses a string."}],
    [{"role": "system", "content": "You are a terse assistant."},
     {"role": "user", "content": "Name three primary colours."}],
    [{"role": "user", "content": "Q: 4+6 ="}, {"role": "assistant", "content": "The answer is 11."},
     {"role": "user", "content": "Review your previous solution. It may contain mistakes. Give a corrected solution."}],
    [{"role": "user", "content": "Hi"}],
]
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smollm2_arith")
    # One CPU device, as a user runs it (the suite's 8 virtual devices would shard the 135M model 8 ways).
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-m", "cipo_jax", "train", "--config", RECIPE, *RECIPE_OVERRIDES,
                           f"run.run_dir={run_dir}", "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_recipe_runs_two_cipo_steps(trained_run):
    from cipo_jax.train.metrics import read_metrics
    from cipo_jax.train.runs import checkpoint_steps

    rows = read_metrics(trained_run)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert 0.0 <= r["reward_mean"] <= 1.0 and r["tokens"] > 0
        assert r["time_sample"] > 0 and r["time_update"] > 0
    assert checkpoint_steps(trained_run)[-1] == 2


def test_transformers_greedy_equals_our_sampler_on_the_export(trained_run, smollm2_gguf, tmp_path, monkeypatch):
    import jax
    import torch
    from flax import nnx
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cipo_jax.bench.sample import hf_greedy
    from cipo_jax.cli import main
    from cipo_jax.models import load_gguf, load_hf
    from cipo_jax.sampling import generate
    from cipo_jax.train.policy import load_policy

    out = tmp_path / "hf"
    assert main(["export", "--checkpoint", str(trained_run), "--out", str(out)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    model, tokenizer, _, step = load_policy(trained_run)
    assert step == 2

    # SFT and RL moved the weights (Adam's first step: about lr each): what is exported is the
    # trained policy, not the GGUF read back.
    trained = jax.tree.leaves(nnx.state(model, nnx.Param))
    original = jax.tree.leaves(nnx.state(load_gguf(smollm2_gguf), nnx.Param))
    moved = [np.abs(np.asarray(a) - np.asarray(b)) for a, b in zip(trained, original)]
    assert sum((m > 0).sum() for m in moved) / sum(m.size for m in moved) > 0.5
    assert max(m.max() for m in moved) > 2.5e-5
    del original, moved
    exported = jax.tree.leaves(nnx.state(load_hf(out), nnx.Param))  # and written as they are
    for a, b in zip(trained, exported):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(2)  # torch's OpenMP pool would otherwise take every core
    hf_tokenizer = AutoTokenizer.from_pretrained(out)
    hf_model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert hf_tokenizer.chat_template == tokenizer.chat_template and "<|im_start|>" in hf_tokenizer.chat_template
    assert hf_tokenizer.eos_token_id == tokenizer.eos_id

    prompts = [tokenizer.encode(tokenizer.apply_chat_template(c, add_generation_prompt=True)) for c in CONVERSATIONS]
    for conversation, ids in zip(CONVERSATIONS, prompts):
        theirs = hf_tokenizer.apply_chat_template(conversation, tokenize=True, add_generation_prompt=True,
                                                  return_dict=True)["input_ids"]
        assert theirs == ids, conversation
    ours = generate(model, prompts, max_new_tokens=NEW_TOKENS, temperature=0.0, stop_tokens=(tokenizer.eos_id,))
    for i, prompt in enumerate(prompts):  # unbatched on their side: no padding involved
        assert ours.tokens[i] == hf_greedy(hf_model, [prompt], NEW_TOKENS, fixed_length=False)[0], CONVERSATIONS[i]
    assert sum(len(t) for t in ours.tokens) >= 4 * NEW_TOKENS // 2  # real generations, not immediate stops


def test_export_straight_from_the_gguf(smollm2_gguf, tmp_path):
    """No run needed: `export --checkpoint smollm2` writes the GGUF's model and tokenizer as an
    HF directory (the dequantised weights, the GGUF's chat template)."""
    from transformers import AutoTokenizer

    from cipo_jax.cli import main
    from cipo_jax.data.tokenizer import load_tokenizer
    from cipo_jax.models import load_gguf, load_hf

    out = tmp_path / "hf"
    assert main(["export", "--checkpoint", "smollm2", "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.asarray(load_hf(out).embed[...]), np.asarray(load_gguf(smollm2_gguf).embed[...]))
    assert AutoTokenizer.from_pretrained(out).chat_template == load_tokenizer(f"gguf:{smollm2_gguf}").chat_template
