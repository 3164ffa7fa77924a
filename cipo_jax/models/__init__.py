"""Flax NNX decoder family (Llama, Qwen2, Qwen3, SmolLM2) and its HF / GGUF weight I/O."""

from cipo_jax.models.config import DecoderConfig, WeightError, tiny_config
from cipo_jax.models.decoder import Decoder, KVCache, init_model
from cipo_jax.models.gguf import load_gguf, load_gguf_tokenizer, write_hf_tokenizer
from cipo_jax.models.hf import load_hf, save_hf

__all__ = [
    "Decoder",
    "DecoderConfig",
    "KVCache",
    "WeightError",
    "init_model",
    "load_gguf",
    "load_gguf_tokenizer",
    "load_hf",
    "save_hf",
    "tiny_config",
    "write_hf_tokenizer",
]
