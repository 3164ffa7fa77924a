"""Chat rendering and the correction turn against transformers' own apply_chat_template."""

import pytest

from cipo_jax.config import CIPOConfig
from cipo_jax.data import Task, load_tasks
from cipo_jax.data.chat_template import render_chat
from cipo_jax.cipo.template import (
    correction_messages,
    correction_prompt_text,
    render_correction,
    render_prompt,
    task_messages,
)

TEMPLATE = CIPOConfig().template
TASK = Task(id="t", prompt=None, reference="4", verifier="math", meta={},
            messages=({"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?\nThink."}))


CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    list(TASK.messages) + [{"role": "assistant", "content": "5"}, {"role": "user", "content": "Sure?"}],
    correction_messages(TASK, "It is 5.\n", TEMPLATE),
    correction_messages(load_tasks("arith", size=1)[0], " 12", TEMPLATE),
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_rendering_matches_transformers(smollm2_hf_tokenizer, smollm2_tokenizer, messages, add_generation_prompt):
    expected = smollm2_hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert smollm2_tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == expected


def test_correction_prompt_ids_match_transformers(smollm2_hf_tokenizer, smollm2_tokenizer):
    attempt = "2+2 is 5. <|im_end|> is not text here"
    ids = render_correction(TASK, attempt, smollm2_tokenizer, chat=True, template=TEMPLATE)
    expected = smollm2_hf_tokenizer.apply_chat_template(
        correction_messages(TASK, attempt, TEMPLATE), tokenize=True, add_generation_prompt=True, return_dict=False
    )
    assert ids == list(expected)
    assert ids[-4:] == smollm2_hf_tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    prompt_ids = render_prompt(TASK, smollm2_tokenizer, chat=True)
    assert prompt_ids == list(smollm2_hf_tokenizer.apply_chat_template(list(TASK.messages), tokenize=True,
                                                            add_generation_prompt=True, return_dict=False))


# Exercises the environment features transformers provides: tojson without HTML escaping,
# raise_exception, loop controls, namespace, the generation tag and special-token variables.
FEATURE_TEMPLATE = """{{ bos_token }}{% set ns = namespace(n=0) %}
{% for m in messages %}
  {% if m.role not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role ' + m.role) }}{% endif %}
  {% if m.content == 'skip' %}{% continue %}{% endif %}
  {% set ns.n = ns.n + 1 %}
  {% if m.role == 'assistant' %}{% generation %}[A]{{ m.content | tojson }}{% endgeneration %}{{ eos_token }}
  {% else %}[{{ m.role | upper }}] {{ m.content | tojson(indent=2) }}
  {% endif %}
{% endfor %}
{{ ns.n }}{% if add_generation_prompt %}[A]{% endif %}"""


def test_template_environment_matches_transformers():
    from transformers.utils.chat_template_utils import render_jinja_template

    messages = [{"role": "user", "content": "<b>&'x'</b> ü"}, {"role": "user", "content": "skip"},
                {"role": "assistant", "content": "a\n\"q\""}]
    special = {"bos_token": "<s>", "eos_token": "</s>"}
    for gen in (True, False):
        (expected,), _ = render_jinja_template([messages], chat_template=FEATURE_TEMPLATE, add_generation_prompt=gen, **special)
        assert render_chat(FEATURE_TEMPLATE, messages, add_generation_prompt=gen, special_tokens=special) == expected
    with pytest.raises(Exception, match="bad role tool"):
        render_chat(FEATURE_TEMPLATE, [{"role": "tool", "content": "x"}], add_generation_prompt=True, special_tokens=special)


def test_plain_correction_text_and_ids(smollm2_tokenizer):
    tokenizer = smollm2_tokenizer
    task = load_tasks("arith", size=1)[0]
    text = correction_prompt_text(task, " 12", TEMPLATE)
    assert text == f"{task.prompt} 12\n{TEMPLATE}\n{task.prompt}"
    assert render_correction(task, " 12", tokenizer, chat=False, template=TEMPLATE) == tokenizer.encode(text)
    assert render_prompt(task, tokenizer, chat=False) == tokenizer.encode(task.prompt)
    assert task_messages(task) == [{"role": "user", "content": task.prompt}]
    with pytest.raises(ValueError, match="given as chat messages; render it with chat=True"):
        render_prompt(TASK, tokenizer, chat=False)
