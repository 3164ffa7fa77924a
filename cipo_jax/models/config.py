"""DecoderConfig: the architecture of one decoder, read from and written to HF config.json.

One config covers Llama, Qwen2, Qwen3 and SmolLM2 (a Llama). What sets a family apart is one
`FAMILIES` entry (q/k/v bias, per-head q/k RMSNorm, its transformers class, its config.json
keys, its GGUF Q/K layout); the rest are per-model fields: head_dim, tied embeddings and the
RoPE scaling rule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Optional


class WeightError(ValueError):
    """A model directory, config or weight file is unusable; the message names the problem."""


@dataclass(frozen=True)
class Family:
    """One model family, keyed by transformers' `model_type`."""

    architecture: str  # config.json "architectures" entry (the transformers class)
    qkv_bias: bool = False  # q/k/v projections always carry biases (Qwen2)
    qk_norm: bool = False  # RMSNorm over head_dim on q and k before RoPE (Qwen3)
    default_rope_theta: Optional[float] = None  # when config.json gives none; None = required
    gguf_permuted_qk: bool = False  # llama.cpp stores this family's Q/K rows permuted for RoPE
    attention_bias_key: bool = True  # config.json has `attention_bias` (optional q/k/v biases)
    hf_extra: tuple[tuple[str, Any], ...] = ()  # further fixed config.json keys


_NO_SLIDING_WINDOW = (("use_sliding_window", False), ("sliding_window", None))
FAMILIES: dict[str, Family] = {
    "llama": Family("LlamaForCausalLM", default_rope_theta=10000.0, gguf_permuted_qk=True,
                    hf_extra=(("mlp_bias", False),)),
    "qwen2": Family("Qwen2ForCausalLM", qkv_bias=True, attention_bias_key=False, hf_extra=_NO_SLIDING_WINDOW),
    "qwen3": Family("Qwen3ForCausalLM", qk_norm=True, hf_extra=_NO_SLIDING_WINDOW),
}


def family(model_type: Any, where: str = "") -> Family:
    """The `FAMILIES` entry of `model_type`; an unknown one is a WeightError naming the known ones."""
    if model_type not in FAMILIES:
        raise WeightError(f"unknown model_type {model_type!r}{where}; supported: {', '.join(FAMILIES)}")
    return FAMILIES[model_type]


ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class DecoderConfig:
    model_type: str = "llama"  # a key of FAMILIES
    vocab_size: int = 512  # V
    hidden_size: int = 128  # E
    intermediate_size: int = 384  # F (SwiGLU width)
    num_layers: int = 2  # L
    num_heads: int = 4  # H query heads
    num_kv_heads: int = 2  # K key/value heads (GQA: H % K == 0)
    head_dim: int = 32  # D
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"  # one of ROPE_TYPES
    rope_factor: float = 1.0  # linear and llama3
    rope_low_freq_factor: float = 1.0  # llama3
    rope_high_freq_factor: float = 4.0  # llama3
    rope_original_max_position: int = 8192  # llama3
    max_position_embeddings: int = 2048
    tie_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2 (and Llama with attention_bias)
    qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on q and k before RoPE
    bos_token_id: Optional[int] = None
    eos_token_id: tuple[int, ...] = ()
    pad_token_id: Optional[int] = None
    # Runtime policy, not architecture: parameters are always float32.
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute dtype; logits are float32
    remat: Literal["none", "full", "dots"] = "none"  # activation checkpointing per layer

    def __post_init__(self):
        family(self.model_type)
        if self.rope_type not in ROPE_TYPES:
            raise WeightError(f"unsupported rope_type {self.rope_type!r}; supported: {', '.join(ROPE_TYPES)}")
        if self.num_heads % self.num_kv_heads:
            raise WeightError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise WeightError(f"head_dim {self.head_dim} must be even for RoPE")
        if self.dtype not in ("float32", "bfloat16"):
            raise WeightError(f"dtype {self.dtype!r}: expected 'float32' or 'bfloat16'")
        if self.remat not in ("none", "full", "dots"):
            raise WeightError(f"remat {self.remat!r}: expected 'none', 'full' or 'dots'")

    def replace(self, **changes: Any) -> "DecoderConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any], **policy: Any) -> "DecoderConfig":
        """Read a transformers config.json dict (4.x top-level rope_theta/rope_scaling or 5.x
        rope_parameters). `policy` sets dtype / remat."""
        model_type = hf.get("model_type")
        fam = family(model_type, " in config.json")

        def need(key: str) -> Any:
            if hf.get(key) is None:
                raise WeightError(f"config.json is missing required key {key!r}")
            return hf[key]

        if hf.get("use_sliding_window"):
            raise WeightError("config.json: use_sliding_window=true is not supported")
        if hf.get("mlp_bias"):
            raise WeightError("config.json: mlp_bias=true is not supported")
        hidden, heads = int(need("hidden_size")), int(need("num_attention_heads"))
        rope = _read_rope(hf, fam)
        eos = hf.get("eos_token_id")
        eos = () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)
        return cls(
            model_type=model_type,
            vocab_size=int(need("vocab_size")),
            hidden_size=hidden,
            intermediate_size=int(need("intermediate_size")),
            num_layers=int(need("num_hidden_layers")),
            num_heads=heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(hf.get("head_dim") or hidden // heads),
            rms_norm_eps=float(need("rms_norm_eps")),
            max_position_embeddings=int(hf.get("max_position_embeddings") or 2048),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=fam.qkv_bias or bool(hf.get("attention_bias", False)),
            qk_norm=fam.qk_norm,
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=eos,
            pad_token_id=hf.get("pad_token_id"),
            **rope,
            **policy,
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """config.json in the transformers 4.x form (top-level rope_theta + rope_scaling), which
        both transformers 4.x and 5.x read."""
        fam = FAMILIES[self.model_type]
        scaling = None
        if self.rope_type == "linear":
            scaling = {"rope_type": "linear", "factor": self.rope_factor}
        elif self.rope_type == "llama3":
            scaling = {
                "rope_type": "llama3",
                "factor": self.rope_factor,
                "low_freq_factor": self.rope_low_freq_factor,
                "high_freq_factor": self.rope_high_freq_factor,
                "original_max_position_embeddings": self.rope_original_max_position,
            }
        eos = None if not self.eos_token_id else self.eos_token_id[0] if len(self.eos_token_id) == 1 else list(self.eos_token_id)
        out = {
            "architectures": [fam.architecture],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": "float32",
        }
        if fam.attention_bias_key:
            out["attention_bias"] = self.qkv_bias
        out.update(fam.hf_extra)
        return out


def _read_rope(hf: Mapping[str, Any], fam: Family) -> dict[str, Any]:
    """RoPE fields from either config form: 4.x (rope_theta, rope_scaling) or 5.x (rope_parameters)."""
    params = hf.get("rope_parameters")
    if params is not None:
        theta = params.get("rope_theta", hf.get("rope_theta"))
        scaling = params
    else:
        theta = hf.get("rope_theta")
        scaling = hf.get("rope_scaling") or {}
    if theta is None:
        theta = fam.default_rope_theta
    if theta is None:
        raise WeightError("config.json is missing required key 'rope_theta'")
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise WeightError(f"unsupported rope_type {rope_type!r} in config.json; supported: {', '.join(ROPE_TYPES)}")
    out: dict[str, Any] = {"rope_theta": float(theta), "rope_type": rope_type}
    if rope_type in ("linear", "llama3"):
        if "factor" not in scaling:
            raise WeightError(f"config.json rope scaling ({rope_type}) is missing required key 'factor'")
        out["rope_factor"] = float(scaling["factor"])
    if rope_type == "llama3":
        for src, dst, cast in (
            ("low_freq_factor", "rope_low_freq_factor", float),
            ("high_freq_factor", "rope_high_freq_factor", float),
            ("original_max_position_embeddings", "rope_original_max_position", int),
        ):
            if src not in scaling:
                raise WeightError(f"config.json rope scaling (llama3) is missing required key {src!r}")
            out[dst] = cast(scaling[src])
    return out


def tiny_config(**overrides: Any) -> DecoderConfig:
    """A small random-init Llama-architecture config for tests, the CPU demo and the trainer."""
    return DecoderConfig(
        model_type="llama",
        vocab_size=512,
        hidden_size=128,
        intermediate_size=384,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=32,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        max_position_embeddings=1024,
        tie_embeddings=True,
    ).replace(**overrides)
