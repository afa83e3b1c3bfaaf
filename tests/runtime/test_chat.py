"""Chat templates: rendered like transformers, carried by both artifact formats, and the
end-of-turn text ending generation."""

from __future__ import annotations

import json
import shutil

import pytest

from edgedistill.exporters.gguf import export_gguf
from edgedistill.exporters.onnx import export_onnx
from edgedistill.hf import load_model, load_tokenizer
from edgedistill.runtime import load
from edgedistill.runtime.chat import CHATML_TEMPLATE, ChatTemplate, normalize_messages
from tests.runtime.test_base import ScriptedModel

# The shape of Llama-2 / Mistral templates: bos_token, loop.index0, raise_exception, a system prefix.
LLAMA2_STYLE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set rest = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set rest = messages %}{% endif %}"
    "{% for message in rest %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' }}{% if loop.first and system %}{{ system + '\n\n' }}{% endif %}"
    "{{ message['content'] | trim + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'] | trim + eos_token }}{% endif %}"
    "{% endfor %}"
)
# transformers-only features a template may use: strftime_now, {% generation %}, tools (None), extra keys
FEATURES = (
    "{{ bos_token }}{% if tools is not none %}TOOLS{% endif %}Today: {{ strftime_now('%Y') }}\n"
    "{% for message in messages %}{{ message['role'] }}{% if message.name %} ({{ message.name }}){% endif %}: "
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}{% endgeneration %}"
    "{% else %}{{ message['content'] }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "You answer questions about the Python docs."},
    {"role": "user", "content": "What does pathlib do?", "name": "ada"},
    {"role": "assistant", "content": "It offers classes for filesystem paths."},
    {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "os.path?"}]},
]


@pytest.fixture(scope="module")
def chat_artifacts(chatml_llama_dir, tmp_path_factory):
    """The tiny Llama with a ChatML template, as an ONNX folder and an f32 GGUF."""
    root = tmp_path_factory.mktemp("chat-artifacts")
    export_gguf(chatml_llama_dir, root / "chat.gguf", "f32")
    export_onnx(chatml_llama_dir, root / "onnx", "fp32")
    return {"model_dir": chatml_llama_dir, "gguf": root / "chat.gguf", "onnx": root / "onnx"}


@pytest.mark.parametrize("source", [CHATML_TEMPLATE, LLAMA2_STYLE, FEATURES])
def test_rendering_matches_transformers_apply_chat_template(tiny_llama_dir, source):
    tokenizer = load_tokenizer(tiny_llama_dir)
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    tokenizer.bos_token, tokenizer.eos_token = "<s>", "</s>"

    ours = template.render(CONVERSATION)
    theirs = tokenizer.apply_chat_template(normalize_messages(CONVERSATION), chat_template=source, tokenize=False,
                                           add_generation_prompt=True)

    assert ours == theirs
    assert "And os.path?" in ours  # text parts joined
    assert "TOOLS" not in ours


def test_the_end_of_turn_text_comes_from_the_template():
    assert ChatTemplate(CHATML_TEMPLATE).turn_end == "<|im_end|>"
    assert ChatTemplate(LLAMA2_STYLE, "<s>", "</s>").turn_end == ""  # ends with EOS: EOS already stops
    assert ChatTemplate("{% for m in messages %}{{ m['content'] }}{% endfor %}").turn_end == ""


def test_bad_messages_and_template_errors_are_value_errors():
    template = ChatTemplate(LLAMA2_STYLE, "<s>", "</s>")

    with pytest.raises(ValueError, match="non-empty list"):
        template.render([])
    with pytest.raises(ValueError, match=r"messages\[0\].role 'wizard' is not one of"):
        template.render([{"role": "wizard", "content": "x"}])
    with pytest.raises(ValueError, match=r"only text parts"):
        template.render([{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}])
    with pytest.raises(ValueError, match="chat template failed on these messages: Conversation roles must alternate"):
        template.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_both_formats_carry_the_template_and_generate_the_torch_greedy_tokens(chat_artifacts):
    import torch

    messages = CONVERSATION[1:2]
    tokenizer, student = load_tokenizer(chat_artifacts["model_dir"]), load_model(chat_artifacts["model_dir"])
    prompt_ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        for _ in range(12):  # plain greedy decoding, EOS ignored
            ids = torch.cat([ids, student(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    torch_tokens = ids[0, len(prompt_ids):].tolist()

    for backend in ("gguf", "onnx"):
        model = load(chat_artifacts[backend])
        completion = model.generate(messages, max_tokens=12, ignore_eos=True)

        assert model.chat_template.source == CHATML_TEMPLATE, backend
        assert model.prepare(messages) == (prompt_ids, ("<|im_end|>",)), backend
        assert completion.tokens == torch_tokens, backend


def test_a_model_without_a_template_refuses_messages_unless_given_one(tiny_llama_dir, tmp_path):
    export_onnx(tiny_llama_dir, tmp_path / "onnx", "fp32")

    with pytest.raises(ValueError, match="this model has no chat template"):
        load(tmp_path / "onnx").generate(CONVERSATION[1:2], max_tokens=2)
    completion = load(tmp_path / "onnx", chat_template="chatml").generate(CONVERSATION[1:2], max_tokens=2, ignore_eos=True)
    assert len(completion.tokens) == 2


def test_generation_stops_at_the_templates_end_of_turn():
    model = ScriptedModel([1, 2, 3, 6, 6])  # "ab" "c|" "de" "!" "!"
    model.chat_template = ChatTemplate("{% for m in messages %}{{ m['content'] }}c|de{% endfor %}")

    completion = model.generate([{"role": "user", "content": "q"}], max_tokens=10)

    assert completion.text == "ab"
    assert completion.finish_reason == "stop"


def test_token_id_prompts_are_checked_against_the_vocabulary(chat_artifacts):
    model = load(chat_artifacts["onnx"])

    with pytest.raises(ValueError, match=r"token id 512 is outside the vocabulary \(0 to 511\)"):
        model.generate([5, 512], max_tokens=2)
    with pytest.raises(ValueError, match="prompt must be text, a list of token ids, or a list of chat messages"):
        model.generate([5, "x"], max_tokens=2)


def test_every_eos_id_of_the_artifact_ends_generation(chat_artifacts, tmp_path):
    """Llama-3 style: generation_config lists several EOS ids (end of text, end of turn)."""
    folder = tmp_path / "onnx"
    shutil.copytree(chat_artifacts["onnx"], folder)
    first = load(folder).generate("The json module", max_tokens=12, ignore_eos=True).tokens
    cut = next((k for k in range(1, len(first)) if first[k] not in first[:k]), 0)  # a token's first appearance
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, first[cut]]}))

    model = load(folder)
    completion = model.generate("The json module", max_tokens=12)

    assert model.end_token_ids == {1, first[cut]}
    assert completion.tokens == first[:cut] and completion.finish_reason == "stop"
