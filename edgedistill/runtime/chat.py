"""Chat templates carried by an artifact, rendered without transformers.

An artifact's template is the Jinja string its tokenizer shipped with (ONNX folder:
``chat_template.jinja`` or ``tokenizer_config.json``; GGUF: ``tokenizer.chat_template``).
It is rendered the way transformers renders it (sandboxed Jinja, ``trim_blocks``,
``lstrip_blocks``, ``raise_exception``, ``bos_token``/``eos_token`` in scope), so a
prompt built here is byte-identical to ``tokenizer.apply_chat_template(...)``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_TEMPLATES = {"chatml": CHATML_TEMPLATE}  # builtin templates by name (recipes' data.chat_template, load())
ROLES = ("system", "user", "assistant", "tool", "developer")
_SENTINEL = "\u2063edgedistill-turn\u2063"  # an invisible separator no template emits on its own


def normalize_messages(messages: Any) -> list[dict[str, str]]:
    """OpenAI-style messages -> ``[{"role", "content"}]`` with string content.

    Content may be a string or a list of ``{"type": "text", "text": ...}`` parts (what
    OpenAI clients send); other part types (images, audio) are refused.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} objects")
    normalized = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValueError(f"messages[{index}] must be an object with a string 'role'")
        if message["role"] not in ROLES:
            raise ValueError(f"messages[{index}].role '{message['role']}' is not one of {', '.join(ROLES)}")
        # other keys (name, tool_call_id, ...) pass through: templates may read them
        normalized.append({**message, "content": _text_content(message.get("content"), index)})
    return normalized


def _text_content(content: Any, index: int) -> str | None:
    if content is None or isinstance(content, str):  # None stays None, as transformers passes it
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"messages[{index}].content: only text parts ({{'type': 'text', 'text': ...}}) are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise ValueError(f"messages[{index}].content must be a string or a list of text parts")


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template with the special-token strings it may refer to."""

    source: str
    bos_token: str = ""
    eos_token: str = ""

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages``; ends with the assistant header when asked."""
        try:
            return _compiled(self.source).render(
                messages=normalize_messages(messages), add_generation_prompt=add_generation_prompt, tools=None,
                documents=None, bos_token=self.bos_token, eos_token=self.eos_token,
            )
        except ValueError:
            raise
        except Exception as exc:  # jinja2's TemplateError and whatever the template raises on purpose
            raise ValueError(f"the model's chat template failed on these messages: {exc}") from None

    @functools.cached_property
    def turn_end(self) -> str:
        """The text the template writes after an assistant message (e.g. ``<|im_end|>``),
        stripped; empty when it writes nothing or only the EOS token. A model trained on
        the template emits it to end its turn, so chat generation stops there."""
        try:
            text = self.render([{"role": "user", "content": "q"}, {"role": "assistant", "content": _SENTINEL}],
                               add_generation_prompt=False)
        except ValueError:
            return ""
        after = text.split(_SENTINEL, 1)[1].strip() if _SENTINEL in text else ""
        return after.removesuffix(self.eos_token).strip() if self.eos_token else after


@functools.lru_cache(maxsize=16)
def _compiled(source: str):
    """The template compiled as transformers compiles it (same options, filters and globals)."""
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """``{% generation %}...{% endgeneration %}`` (assistant-mask templates): renders its body."""

        tags = {"generation"}

        def parse(self, parser) -> list[nodes.Node]:
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[loopcontrols, GenerationBlock])
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise
    environment.globals["strftime_now"] = _strftime_now
    return environment.from_string(source)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class TemplateRaised(Exception):
    """A template's own ``raise_exception(message)`` (e.g. roles that do not alternate)."""


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _raise(message: str):
    raise TemplateRaised(message)


def template_source(config: dict, jinja_file_text: str | None = None) -> str | None:
    """The Jinja text of an HF tokenizer folder's template: ``chat_template.jinja`` wins over
    the config's ``chat_template`` (a string, or a list of named templates: the one named "default")."""
    source = jinja_file_text or config.get("chat_template")
    if isinstance(source, list):
        source = next((t.get("template") for t in source if isinstance(t, dict) and t.get("name") == "default"), None)
    return source if isinstance(source, str) and source else None


def template_from_tokenizer_config(config: dict, jinja_file_text: str | None = None) -> ChatTemplate | None:
    """:func:`template_source` as a :class:`ChatTemplate` with the config's BOS / EOS text."""
    source = template_source(config, jinja_file_text)
    if source is None:
        return None
    return ChatTemplate(source, token_text(config.get("bos_token")), token_text(config.get("eos_token")))


def token_text(token) -> str:
    """A special token's text from a tokenizer config entry (a string or an AddedToken dict)."""
    if isinstance(token, dict):  # {"content": "<s>", "lstrip": ..., ...}
        return token.get("content") or ""
    return token or ""
