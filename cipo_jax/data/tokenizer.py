"""One tokenizer interface over three sources, chosen by spec:

    hf:<dir>       tokenizer.json (the `tokenizers` library) + tokenizer_config.json
                   (special tokens, add_bos_token, chat_template; or chat_template.jinja)
    sp:<file>      a sentencepiece model (e.g. one trained by `python -m cipo_jax data train-tokenizer`)
    gguf:<file>    the tokenizer stored in a GGUF file's metadata

`encode` never inserts special tokens except a BOS when asked: chat templates write their own,
and ids of a rendered prompt then match transformers' `apply_chat_template(tokenize=True)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from cipo_jax.data.chat_template import render_chat

KNOWN_SPECS = ("hf:<dir>", "sp:<model file>", "gguf:<file>")


class _Backend(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int], skip_special: bool) -> str: ...
    def vocab_size(self) -> int: ...


class _HFBackend:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def encode(self, text):
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special):
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special)

    def vocab_size(self):
        return self.tokenizer.get_vocab_size(with_added_tokens=True)


class _SPBackend:
    def __init__(self, processor):
        self.processor = processor

    def encode(self, text):
        return self.processor.encode(text)

    def decode(self, ids, skip_special):
        # sentencepiece decodes control ids (bos/eos/pad) to "" either way.
        return self.processor.decode(list(ids))

    def vocab_size(self):
        return self.processor.get_piece_size()


class Tokenizer:
    """encode/decode plus the ids and chat template a sampler and trainer need."""

    def __init__(
        self,
        backend: _Backend,
        *,
        spec: str,
        bos_id: int | None,
        eos_id: int,
        pad_id: int | None = None,
        add_bos: bool = False,
        chat_template: str | None = None,
        special_tokens: dict[str, str] | None = None,
    ):
        self._backend = backend
        self.spec = spec
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.pad_id = eos_id if pad_id is None else pad_id
        self.add_bos = add_bos  # the model's convention for plain-text prompts
        self.chat_template = chat_template
        self.special_tokens = dict(special_tokens or {})

    @property
    def vocab_size(self) -> int:
        return self._backend.vocab_size()

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = self._backend.encode(text)
        if add_bos:
            if self.bos_id is None:
                raise ValueError(f"tokenizer {self.spec}: add_bos asked but it has no BOS token")
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids, skip_special: bool = False) -> str:
        return self._backend.decode([int(i) for i in ids], skip_special)

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
        if self.chat_template is None:
            raise ValueError(f"tokenizer {self.spec} has no chat template; render plain prompts (tasks.chat=false)")
        return render_chat(
            self.chat_template, list(messages), add_generation_prompt=add_generation_prompt, special_tokens=self.special_tokens
        )

    def __repr__(self):
        return f"Tokenizer({self.spec!r}, vocab_size={self.vocab_size}, bos={self.bos_id}, eos={self.eos_id}, pad={self.pad_id})"


def load_tokenizer(spec: str) -> Tokenizer:
    kind, _, arg = spec.partition(":")
    if not arg or kind not in ("hf", "sp", "gguf"):
        raise ValueError(f"unknown tokenizer spec {spec!r}; known: {', '.join(KNOWN_SPECS)}")
    path = Path(arg)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer {spec}: {path} does not exist")
    return {"hf": _load_hf, "sp": _load_sp, "gguf": _load_gguf}[kind](spec, path)


def _load_gguf(spec: str, path: Path) -> Tokenizer:
    from cipo_jax.data.gguf_tokenizer import load_gguf_tokenizer

    g = load_gguf_tokenizer(path)
    names = {"bos_token": g.bos_id, "eos_token": g.eos_id, "unk_token": g.unk_id, "pad_token": g.pad_id}
    return Tokenizer(
        _HFBackend(g.tokenizer),
        spec=spec,
        bos_id=g.bos_id,
        eos_id=g.eos_id,
        pad_id=g.pad_id,
        add_bos=g.add_bos,
        chat_template=g.chat_template,
        special_tokens={name: g.tokens[i] for name, i in names.items() if i is not None},
    )


def _token_text(value) -> str | None:
    # tokenizer_config.json writes a special token as a string or as an AddedToken dict.
    return value.get("content") if isinstance(value, dict) else value


def _load_hf(spec: str, path: Path) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"tokenizer {spec}: no tokenizer.json in {path}")
    tokenizer = HFTokenizer.from_file(str(path / "tokenizer.json"))
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    template_file = path / "chat_template.jinja"
    template = template_file.read_text() if template_file.is_file() else config.get("chat_template")
    special = {
        name: text
        for name in ("bos_token", "eos_token", "unk_token", "pad_token")
        if (text := _token_text(config.get(name))) is not None
    }

    def token_id(name):
        text = special.get(name)
        return None if text is None else tokenizer.token_to_id(text)

    eos_id = token_id("eos_token")
    if eos_id is None:
        raise ValueError(f"tokenizer {spec}: tokenizer_config.json names no eos_token found in the vocabulary")
    return Tokenizer(
        _HFBackend(tokenizer),
        spec=spec,
        bos_id=token_id("bos_token"),
        eos_id=eos_id,
        pad_id=token_id("pad_token"),
        add_bos=bool(config.get("add_bos_token", False)),
        chat_template=template,
        special_tokens=special,
    )


def _load_sp(spec: str, path: Path) -> Tokenizer:
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
    ids = {name: getattr(processor, f"{name}_id")() for name in ("bos", "eos", "pad")}
    if ids["eos"] < 0:
        raise ValueError(f"tokenizer {spec}: the sentencepiece model has no EOS piece")
    return Tokenizer(
        _SPBackend(processor),
        spec=spec,
        bos_id=ids["bos"] if ids["bos"] >= 0 else None,
        eos_id=ids["eos"],
        pad_id=ids["pad"] if ids["pad"] >= 0 else None,
        special_tokens={f"{name}_token": processor.id_to_piece(i) for name, i in ids.items() if i >= 0},
    )
