"""hf / sp / gguf tokenizers: ids against transformers or sentencepiece itself, round trips,
and the sentencepiece training CLI on a task corpus."""

import argparse

import pytest

from cipo_jax.config import CIPOConfig
from cipo_jax.data import load_tasks
from cipo_jax.data.cli import add_arguments, main
from cipo_jax.cipo.template import render_correction, render_prompt
from cipo_jax.data.tokenizer import load_tokenizer

TEXTS = [
    "Hello world",
    "  leading spaces and\ttabs\n\nnew lines  ",
    "def f(x):\n    return x**2  # ümlaut, 中文, emoji 🤖",
    "12345678 + 987 = 988_665; <|im_start|>user\nhi<|im_end|>",
    "",
]


def test_gguf_ids_match_transformers(smollm2_hf_tokenizer, smollm2_tokenizer):
    for text in TEXTS:
        ids = smollm2_tokenizer.encode(text)
        assert ids == smollm2_hf_tokenizer.encode(text, add_special_tokens=False), text
        assert smollm2_tokenizer.decode(ids) == smollm2_hf_tokenizer.decode(ids) == text
    assert (smollm2_tokenizer.bos_id, smollm2_tokenizer.eos_id, smollm2_tokenizer.pad_id) == (smollm2_hf_tokenizer.bos_token_id, smollm2_hf_tokenizer.eos_token_id, smollm2_hf_tokenizer.pad_token_id)
    assert smollm2_tokenizer.vocab_size == len(smollm2_hf_tokenizer) == 49152
    assert smollm2_tokenizer.encode("hi", add_bos=True)[0] == smollm2_tokenizer.bos_id
    assert smollm2_tokenizer.decode(smollm2_tokenizer.encode("<|im_start|>a"), skip_special=True) == "a"


def test_hf_dir_matches_transformers(smollm2_hf_tokenizer, tmp_path):
    smollm2_hf_tokenizer.save_pretrained(tmp_path)
    hf = load_tokenizer(f"hf:{tmp_path}")
    for text in TEXTS:
        assert hf.encode(text) == smollm2_hf_tokenizer.encode(text, add_special_tokens=False)
        assert hf.decode(hf.encode(text)) == text
    assert (hf.bos_id, hf.eos_id, hf.pad_id) == (smollm2_hf_tokenizer.bos_token_id, smollm2_hf_tokenizer.eos_token_id, smollm2_hf_tokenizer.pad_token_id)
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert hf.apply_chat_template(messages) == smollm2_hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_bad_specs_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer spec 'bpe:x'; known: hf:<dir>, sp:<model file>, gguf:<file>"):
        load_tokenizer("bpe:x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(f"sp:{tmp_path / 'none.model'}")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(f"hf:{tmp_path}")


def test_train_tokenizer_cli_on_task_corpus(tmp_path, capsys):
    import sentencepiece

    out = tmp_path / "arith.model"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = ["train-tokenizer", "--tasks", "arith:cot=1", "--size", "500", "--vocab-size", "96", "--out", str(out)]
    assert main(parser.parse_args(args)) == 0
    assert "wrote" in capsys.readouterr().out
    sp = load_tokenizer(f"sp:{out}")
    raw = sentencepiece.SentencePieceProcessor(model_file=str(out))
    assert (sp.pad_id, sp.bos_id, sp.eos_id) == (0, 2, 3) and sp.vocab_size <= 96
    assert sp.chat_template is None
    template = CIPOConfig().template
    tasks = load_tasks("arith:cot=1", size=20, seed=9, split="test")
    for task in tasks:
        for text in (task.prompt, task.response, task.prompt + task.response):
            assert sp.encode(text) == raw.encode(text) and sp.decode(sp.encode(text)) == text
        # Digits are single pieces; prompt ids + response ids decode to the joined text.
        pieces = [raw.id_to_piece(i) for i in sp.encode(task.meta["expression"])]
        assert all(len(p) == 1 for p in pieces if any(c.isdigit() for c in p))
        assert sp.decode(render_prompt(task, sp, chat=False) + sp.encode(task.response)) == task.prompt + task.response
        ids = render_correction(task, task.response, sp, chat=False, template=template)
        assert sp.decode(ids) == f"{task.prompt}{task.response}\n{template}\n{task.prompt}" and 1 not in ids  # no unk
    with pytest.raises(ValueError, match="has no chat template"):
        sp.apply_chat_template([{"role": "user", "content": "x"}])
