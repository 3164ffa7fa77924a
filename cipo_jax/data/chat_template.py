"""Render a chat template exactly as transformers' `apply_chat_template(tokenize=False)` does.

Same jinja2 environment: a sandbox with trim_blocks and lstrip_blocks, the loopcontrols
extension, a `{% generation %}` tag (rendered as its body), `raise_exception`, `strftime_now`,
and a `tojson` filter that does not escape HTML. The template also sees the tokenizer's special
tokens (bos_token, eos_token, ...) by name, as transformers passes them.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for masks; rendering is its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["namespace"] = jinja2.utils.Namespace
    return env.from_string(source)


def render_chat(
    source: str, messages: list[dict[str, str]], *, add_generation_prompt: bool, special_tokens: dict[str, str]
) -> str:
    """`messages` rendered by template `source`; special_tokens maps names like "eos_token" to text."""
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    return compile_template(source).render(
        messages=plain, tools=None, documents=None, add_generation_prompt=add_generation_prompt, **special_tokens
    )
