"""Greedy sampling of the real SmolLM2-135M (GGUF) equals transformers `generate` on the same file."""

import pytest

from cipo_jax.bench.sample import hf_greedy, load_hf_reference, smollm2_gguf_path
from cipo_jax.models import load_gguf
from cipo_jax.sampling import generate

TEXTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Question: What is 17 + 25? Answer:",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "Photosynthesis converts",
    "List three prime numbers:",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "In 1969, astronauts",
    "Hello",
]


@pytest.mark.slow
def test_greedy_equals_transformers_generate():
    from transformers import AutoTokenizer

    path = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    prompts = [tokenizer(t)["input_ids"] for t in TEXTS]
    assert len({len(p) for p in prompts}) >= 6  # ragged lengths batched together

    model = load_gguf(path)
    eos = model.config.eos_token_id
    ours = generate(model, prompts, max_new_tokens=32, temperature=0.0, stop_tokens=eos)
    hf_model = load_hf_reference(path)
    for i, prompt in enumerate(prompts):  # unbatched reference: no padding involved on its side
        assert ours.tokens[i] == hf_greedy(hf_model, [prompt], 32, fixed_length=False)[0], f"prompt {i}: {TEXTS[i]!r}"
        assert ours.finish_reason[i] == ("stop" if ours.tokens[i][-1] in eos else "length")
