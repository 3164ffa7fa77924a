"""llama.cpp GGUF files: the model (dequantised to float32) and its tokenizer in HF form.

Tensors are renamed to transformers' names and llama.cpp's RoPE row permutation of the Llama
Q/K projections is undone, then the model is built by the same code as for safetensors. The
tokenizer is `cipo_jax.data.gguf_tokenizer.load_gguf_tokenizer` (byte-level BPE, as
transformers builds it); `write_hf_tokenizer` saves it as tokenizer.json + tokenizer_config.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from cipo_jax.data.gguf_tokenizer import load_gguf_tokenizer
from cipo_jax.models.config import FAMILIES, DecoderConfig, WeightError, family
from cipo_jax.models.decoder import Decoder
from cipo_jax.models.weights import model_from_hf_tensors

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def _hf_name(name: str) -> str:
    """transformers' name for a GGUF tensor name (unknown names pass through, so the shared
    loader reports them as unexpected)."""
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    match = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
    return name


def unpermute_rope_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head Q/K row order: it stores rows as
    hf.reshape(heads, 2, D/2, in).swapaxes(1, 2) (interleaved RoPE pairs)."""
    out_dim, in_dim = w.shape
    d = out_dim // heads
    return w.reshape(heads, d // 2, 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


def _reader(path: Path):
    import gguf

    if not path.is_file():
        raise WeightError(f"GGUF file does not exist: {path}")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # the reader raises assorted errors on a damaged file
        raise WeightError(f"cannot read GGUF file {path}: {type(e).__name__}: {e}") from None


def _field(reader, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def gguf_config(reader, path: Path, **policy: Any) -> DecoderConfig:
    """DecoderConfig from GGUF metadata ({arch}.block_count, ...)."""
    arch = _field(reader, "general.architecture")
    fam = family(arch, f" (general.architecture of {path})")

    def need(key: str) -> Any:
        value = _field(reader, f"{arch}.{key}")
        if value is None:
            raise WeightError(f"{path}: GGUF metadata is missing required key {arch}.{key!r}")
        return value

    hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
    scaling = _field(reader, f"{arch}.rope.scaling.type") or "none"
    if scaling not in ("none", "linear"):
        raise WeightError(f"{path}: unsupported {arch}.rope.scaling.type {scaling!r}; supported: none, linear")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab = _field(reader, f"{arch}.vocab_size") or (len(tokens) if tokens else None)
    if vocab is None:
        raise WeightError(f"{path}: GGUF metadata has neither {arch}.vocab_size nor tokenizer.ggml.tokens")
    names = {t.name for t in reader.tensors}
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    return DecoderConfig(
        model_type=arch,
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(need("feed_forward_length")),
        num_layers=int(need("block_count")),
        num_heads=heads,
        num_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv") or heads),
        head_dim=int(_field(reader, f"{arch}.attention.key_length") or hidden // heads),
        rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base") or 10000.0),
        rope_type="linear" if scaling == "linear" else "default",
        rope_factor=float(_field(reader, f"{arch}.rope.scaling.factor") or 1.0),
        max_position_embeddings=int(_field(reader, f"{arch}.context_length") or 2048),
        tie_embeddings="output.weight" not in names,
        qkv_bias=fam.qkv_bias,
        qk_norm=fam.qk_norm,
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=() if eos is None else (int(eos),),
        pad_token_id=_field(reader, "tokenizer.ggml.padding_token_id"),
        **policy,
    )


def load_gguf(path, *, dtype: str = "float32") -> Decoder:
    """The model of a GGUF file, dequantised to float32 parameters (`dtype` is the compute dtype).
    Its tokenizer: `load_gguf_tokenizer(path)`; `save_hf` writes it along with the weights."""
    import gguf.quants

    path = Path(path)
    reader = _reader(path)
    config = gguf_config(reader, path, dtype=dtype)
    permuted = FAMILIES[config.model_type].gguf_permuted_qk
    tensors = {}
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        name = _hf_name(t.name)
        if permuted and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.num_heads if name.endswith("q_proj.weight") else config.num_kv_heads
            w = unpermute_rope_rows(w, heads)
        tensors[name] = w
    model = model_from_hf_tensors(config, tensors, source=str(path))
    model.source = ("gguf", str(path))
    return model


def write_hf_tokenizer(gguf_path, out_dir) -> None:
    """Save a GGUF file's tokenizer as tokenizer.json + tokenizer_config.json (with the chat
    template), which transformers' AutoTokenizer loads."""
    tok = load_gguf_tokenizer(gguf_path)
    out_dir = Path(out_dir)
    tok.tokenizer.save(str(out_dir / "tokenizer.json"))

    def text(i):
        return None if i is None else tok.tokens[i]

    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": text(tok.bos_id),
        "eos_token": text(tok.eos_id),
        "unk_token": text(tok.unk_id),
        "pad_token": text(tok.pad_id),
        "add_bos_token": tok.add_bos,
        "clean_up_tokenization_spaces": False,
        "chat_template": tok.chat_template,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}, indent=2))
