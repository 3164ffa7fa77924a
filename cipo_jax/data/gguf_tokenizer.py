"""The byte-level BPE tokenizer described by a GGUF file's metadata, built with `tokenizers`.

A GGUF carries no tokenizer.json, only llama.cpp's keys (tokenizer.ggml.tokens / merges /
token_type / bos_token_id / ...). This builds the same tokenizer transformers builds from them
(GPT2Tokenizer's BPE, control tokens as special added tokens, the split regex named by
tokenizer.ggml.pre), so ids match `AutoTokenizer.from_pretrained(dir, gguf_file=...)`.
Sentencepiece-type GGUF files (tokenizer.ggml.model == "llama") are not supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> the split its merges were learned with; others use GPT-2's ByteLevel split.
PRE_TOKENIZER_SPLITS = {"llama3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT}


@dataclass(frozen=True)
class GGUFTokenizer:
    tokenizer: Tokenizer
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    unk_id: int | None
    add_bos: bool
    chat_template: str | None
    tokens: tuple[str, ...]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def load_gguf_tokenizer(path: str | Path) -> GGUFTokenizer:
    import gguf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    reader = gguf.GGUFReader(str(path))
    model_type = _field(reader, "tokenizer.ggml.model")
    if model_type != "gpt2":
        raise ValueError(f"{path}: tokenizer.ggml.model is {model_type!r}; only byte-level BPE ('gpt2') is supported")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    token_types = list(_field(reader, "tokenizer.ggml.token_type") or [])
    merges = [tuple(m.split(" ")) for m in _field(reader, "tokenizer.ggml.merges")]

    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    # Tokens outside the byte alphabet (rare, e.g. a raw special string) are respelled as bytes.
    vocab = {
        (t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))): i for i, t in enumerate(tokens)
    }
    tokenizer = Tokenizer(
        BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
    )
    split = PRE_TOKENIZER_SPLITS.get(_field(reader, "tokenizer.ggml.pre"))
    if split is None:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(split), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    tokenizer.decoder = decoders.ByteLevel()
    typed = list(zip(tokens, token_types))
    # A control token spelled outside the byte alphabet is a llama.cpp mislabel; transformers skips it too.
    tokenizer.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t, k in typed if k == CONTROL and set(t) <= alphabet]
    )
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t, k in typed if k == USER_DEFINED and t in vocab])

    def token_id(key):
        value = _field(reader, f"tokenizer.ggml.{key}")
        return None if value is None else int(value)

    eos_id = token_id("eos_token_id")
    pad_id = token_id("padding_token_id")
    return GGUFTokenizer(
        tokenizer=tokenizer,
        bos_id=token_id("bos_token_id"),
        eos_id=eos_id,
        pad_id=eos_id if pad_id is None else pad_id,
        unk_id=token_id("unknown_token_id"),
        add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token")),
        chat_template=_field(reader, "tokenizer.chat_template"),
        tokens=tuple(tokens),
    )
