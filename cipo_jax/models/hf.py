"""Hugging Face checkpoints: load_hf (config.json + safetensors, single or sharded) and save_hf."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from jax.sharding import Mesh

from cipo_jax.models.config import DecoderConfig, WeightError
from cipo_jax.models.decoder import Decoder
from cipo_jax.models.safetensors_io import read_safetensors, write_safetensors
from cipo_jax.models.weights import hf_tensors, model_from_hf_tensors

# Tokenizer-side files copied along by save_hf when the model was loaded from an HF directory.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


def read_hf_config(path: Path, **policy) -> DecoderConfig:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise WeightError(f"no config.json in {path}")
    try:
        hf = json.loads(config_file.read_text())
    except ValueError as e:
        raise WeightError(f"{config_file} is not valid JSON: {e}") from None
    return DecoderConfig.from_hf_dict(hf, **policy)


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not weight_map:
            raise WeightError(f"{index} has no weight_map")
        files = [path / name for name in sorted(set(weight_map.values()))]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise WeightError(f"{index} names missing file {absent[0]!r}")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise WeightError(f"no *.safetensors file in {path}")
    return files


def load_hf(path, *, dtype: str = "float32", mesh: Optional[Mesh] = None) -> Decoder:
    """A Decoder from a transformers checkpoint directory. `dtype` is the compute dtype
    (parameters are float32); with `mesh` the parameters are placed sharded."""
    path = Path(path)
    if not path.exists():
        raise WeightError(f"model path does not exist: {path}")
    if not path.is_dir():
        raise WeightError(f"model path is not a directory: {path}")
    config = read_hf_config(path, dtype=dtype)
    tensors = {}
    for file in _weight_files(path):
        tensors.update(read_safetensors(file))
    model = model_from_hf_tensors(config, tensors, mesh=mesh, source=str(path))
    model.source = ("hf", str(path))
    return model


def save_hf(model: Decoder, path) -> None:
    """Write config.json + model.safetensors (float32) that transformers loads, plus the
    tokenizer of the model's source (copied from an HF directory or rebuilt from a GGUF)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(model.config.to_hf_dict(), indent=2))
    write_safetensors(hf_tensors(model), path / "model.safetensors")
    kind, where = model.source or (None, None)
    if kind == "hf" and Path(where).resolve() != path.resolve():
        for name in TOKENIZER_FILES:
            if (Path(where) / name).is_file():
                shutil.copy2(Path(where) / name, path / name)
    elif kind == "gguf":
        from cipo_jax.models.gguf import write_hf_tokenizer

        write_hf_tokenizer(where, path)
