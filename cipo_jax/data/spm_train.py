"""Train a small sentencepiece model on a task corpus, for the tiny demo models.

Identity normalisation, no dummy prefix, no whitespace folding: decode(encode(text)) == text for
text made of covered characters, and the ids of a prompt followed by the ids of its response
decode to the joined text, which is how the trainer builds sequences. Digits are split into
single pieces so arithmetic is learnt digit by digit. Ids: pad 0, unk 1, bos 2, eos 3.
"""

from __future__ import annotations

import io
from pathlib import Path

from cipo_jax.data.tasks import Task


def task_corpus(tasks: list[Task], extra: tuple[str, ...] = ()) -> list[str]:
    """Every text the model will read or write for these tasks: prompts, messages, responses,
    references, and `extra` (e.g. the correction template)."""
    texts = list(extra)
    for task in tasks:
        texts.extend([task.prompt] if task.prompt is not None else [m["content"] for m in task.messages])
        texts.extend(t for t in (task.response, task.reference) if t)
    return [t for t in texts if t]


def train_sentencepiece(texts: list[str], vocab_size: int, out: str | Path, model_type: str = "bpe") -> Path:
    """Write `<out>` (the .model file); the vocabulary may come out smaller than vocab_size when
    the corpus has fewer distinct pieces."""
    import sentencepiece

    if not texts:
        raise ValueError("train_sentencepiece: empty corpus")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        # Lines are the trainer's sentences; split multi-line texts so newlines don't end one early.
        sentence_iterator=iter([line for text in texts for line in text.split("\n") if line]),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type=model_type,
        hard_vocab_limit=False,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_digits=True,
        user_defined_symbols=["\n"],
        character_coverage=1.0,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        minloglevel=2,
    )
    out.write_bytes(buffer.getvalue())
    return out
