"""Parity with transformers for random-weight tiny Llama / Qwen2 / Qwen3 checkpoints, both
config.json forms, and the HF save round trip."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cipo_jax.models import DecoderConfig, load_hf, save_hf  # noqa: E402
from cipo_jax.models.config import FAMILIES, tiny_config  # noqa: E402

SMALL = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, attn_implementation="eager")

CASES = {
    "llama_gqa": ("LlamaConfig", dict(num_attention_heads=4, num_key_value_heads=2)),
    "llama_tied_llama3_rope": (
        "LlamaConfig",
        dict(
            num_attention_heads=4,
            num_key_value_heads=1,
            tie_word_embeddings=True,
            # original_max_position_embeddings=16 so the 40-token inputs reach the scaled band.
            rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16),
        ),
    ),
    "llama_linear_rope_eps_theta": (
        "LlamaConfig",
        dict(num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-3, rope_theta=500.0, rope_scaling=dict(rope_type="linear", factor=2.5)),
    ),
    "qwen2_bias": ("Qwen2Config", dict(num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6)),
    "qwen3_qknorm_head_dim": ("Qwen3Config", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=24, rms_norm_eps=1e-5)),
}


def make_hf(case: str, path):
    """A transformers model with every parameter perturbed (so norms and biases matter), saved to `path`."""
    cls, kw = CASES[case]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, cls)(**SMALL, **kw)).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(path)
    return model


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


TOKENS = np.random.default_rng(0).integers(0, 256, (2, 40))


@pytest.mark.parametrize("case", sorted(CASES))
def test_parity_with_transformers(case, tmp_path):
    ref = make_hf(case, tmp_path)
    model = load_hf(tmp_path)
    ours = np.asarray(model(jnp.asarray(TOKENS, jnp.int32)))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, hf_logits(ref, TOKENS), atol=1e-4, rtol=0)


def test_config_forms_4x_and_5x_agree(tmp_path):
    ref = make_hf("llama_tied_llama3_rope", tmp_path)
    hf5 = json.loads((tmp_path / "config.json").read_text())
    assert "rope_parameters" in hf5  # transformers 5.x writes this form
    params = dict(hf5.pop("rope_parameters"))
    hf4 = dict(hf5, rope_theta=params.pop("rope_theta"), rope_scaling=params)
    (tmp_path / "config.json").write_text(json.dumps(hf4))
    cfg4 = DecoderConfig.from_hf_dict(hf4)
    assert cfg4 == DecoderConfig.from_hf_dict(dict(hf5, rope_parameters=dict(params, rope_theta=hf4["rope_theta"])))
    assert cfg4.rope_type == "llama3" and cfg4.rope_original_max_position == 16
    np.testing.assert_allclose(np.asarray(load_hf(tmp_path)(jnp.asarray(TOKENS))), hf_logits(ref, TOKENS), atol=1e-4, rtol=0)


def test_qwen2_config_without_head_dim():
    hf = dict(model_type="qwen2", vocab_size=10, hidden_size=64, intermediate_size=8, num_hidden_layers=1,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e6)
    cfg = DecoderConfig.from_hf_dict(hf)
    assert cfg.head_dim == 16 and cfg.qkv_bias and not cfg.qk_norm


@pytest.mark.parametrize("case", ["qwen2_bias", "qwen3_qknorm_head_dim", "llama_tied_llama3_rope"])
def test_save_hf_round_trip_through_transformers(case, tmp_path):
    make_hf(case, tmp_path / "src")
    (tmp_path / "src" / "tokenizer_config.json").write_text("{}")  # travels with the weights
    model = load_hf(tmp_path / "src")
    save_hf(model, tmp_path / "out")
    assert (tmp_path / "out" / "tokenizer_config.json").is_file()
    reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    ours = np.asarray(model(jnp.asarray(TOKENS)))
    np.testing.assert_allclose(hf_logits(reloaded.eval(), TOKENS), ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_family_table_agrees_with_transformers(model_type):
    """Each FAMILIES entry names transformers' causal-LM class for its model_type, and the
    config.json it writes builds a transformers model whose q/k/v biases and q/k norms are the
    ones the entry declares; reading it back gives the same DecoderConfig."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    fam = FAMILIES[model_type]
    assert MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type] == fam.architecture
    cfg = tiny_config(model_type=model_type, qkv_bias=fam.qkv_bias, qk_norm=fam.qk_norm, vocab_size=64,
                      hidden_size=32, intermediate_size=64, num_layers=1, head_dim=8)
    hf = cfg.to_hf_dict()
    assert DecoderConfig.from_hf_dict(hf) == cfg
    torch.manual_seed(0)
    model = getattr(transformers, fam.architecture)(transformers.AutoConfig.for_model(**hf))
    attn = model.model.layers[0].self_attn
    assert (attn.q_proj.bias is not None) == fam.qkv_bias
    assert hasattr(attn, "q_norm") == fam.qk_norm
