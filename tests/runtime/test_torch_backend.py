"""The torch backend: an HF model folder (the teacher) behind the runtime's API and server."""

from __future__ import annotations

import json
import shutil
import sys

import httpx
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from edgedistill.cli import main
from edgedistill.exporters.onnx import export_onnx
from edgedistill.runtime import detect_format, load
from tests.runtime.server_process import running_server

QUESTION = [{"role": "user", "content": "What does the json module do?"}]


def _hf_model(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_qwen2_dir"])  # tied embeddings; q/k/v biases
def test_logits_equal_the_hf_forward(fixture, request):
    model_dir = request.getfixturevalue(fixture)
    model = load(model_dir)
    ids = model.encode("The json module parses text")

    logits = model.logits(ids)
    with torch.no_grad():
        expected = _hf_model(model_dir)(torch.tensor([ids])).logits[0].numpy()  # (T, V)

    assert model.format == "hf"
    assert logits.dtype == np.float32 and logits.shape == (len(ids), model.vocab_size)
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)


def test_greedy_tokens_equal_hf_generate(tiny_mistral_dir):
    """The Mistral fixture: its untied random lm_head does not repeat one token, so a
    wrong cache position would change the sequence."""
    model = load(tiny_mistral_dir)
    ids = model.encode("The pathlib module offers")

    completion = model.generate(ids, max_tokens=16, ignore_eos=True)
    prompt = torch.tensor([ids])
    with torch.no_grad():  # eos_token_id=None: HF must not stop early either (ignore_eos)
        expected = _hf_model(tiny_mistral_dir).generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                                       max_new_tokens=16, eos_token_id=None, pad_token_id=0)
    expected_tokens = expected[0, len(ids):].tolist()

    assert len(expected_tokens) == 16 and len(set(expected_tokens)) > 4  # the comparison can tell caches apart
    assert completion.tokens == expected_tokens
    assert completion.finish_reason == "length" and completion.timings.decode_steps == 15


def test_appending_to_the_cache_equals_a_full_forward(tiny_mistral_dir):
    model = load(tiny_mistral_dir)
    prompt = model.encode("Return a new path")
    continuation = [17, 240, 3, 99]

    model.reset()
    model._append(prompt)
    one_token = model._append(continuation[:1])
    three_tokens = model._append(continuation[1:])
    full = model.logits(prompt + continuation)  # (T, V)

    assert one_token.shape == (model.vocab_size,)
    np.testing.assert_allclose(one_token, full[len(prompt)], atol=1e-5, rtol=0)
    np.testing.assert_allclose(three_tokens, full[-1], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def teacher_and_student(chatml_llama_dir, tmp_path_factory):
    """A ChatML teacher whose generation config lists two end ids (as Llama-3's does), and
    its fp32 ONNX export: the student folder the ONNX backend reads."""
    root = tmp_path_factory.mktemp("teacher-and-student")
    teacher = root / "teacher"
    shutil.copytree(chatml_llama_dir, teacher)
    generation_config = json.loads((teacher / "generation_config.json").read_text())
    (teacher / "generation_config.json").write_text(json.dumps({**generation_config, "eos_token_id": [1, 2]}))
    export_onnx(teacher, root / "onnx", "fp32")
    return teacher, root / "onnx"


def test_stopping_ids_chat_and_tokens_mirror_the_onnx_backend(teacher_and_student):
    teacher, student = load(teacher_and_student[0]), load(teacher_and_student[1])
    text = "naïve café: the json module"

    assert (teacher.format, student.format) == ("hf", "onnx")
    assert teacher.eos_token_id == student.eos_token_id == 1
    assert teacher.end_token_ids == student.end_token_ids == {1, 2}
    assert (teacher.bos_token, teacher.eos_token) == (student.bos_token, student.eos_token) == ("<|bos|>", "<|eos|>")
    assert teacher.chat_template.source == student.chat_template.source
    assert teacher.prepare(QUESTION) == student.prepare(QUESTION)  # same ids, same end-of-turn stop
    assert teacher.prepare(QUESTION).stops == ("<|im_end|>",)
    assert teacher.encode(text) == student.encode(text)
    assert teacher.decode(teacher.encode(text)) == text
    assert (teacher.context_length, teacher.vocab_size) == (student.context_length, student.vocab_size)


def test_a_real_server_streams_the_runtimes_text(tiny_mistral_dir):
    prompt = "The pathlib module offers"
    expected = load(tiny_mistral_dir).generate(prompt, max_tokens=12, ignore_eos=True)
    ask = {"prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": True, "stream": True}

    with running_server(tiny_mistral_dir) as server, httpx.stream(
            "POST", f"{server.url}/v1/completions", json=ask, timeout=60) as response:
        lines = list(response.iter_lines())

    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert response.status_code == 200
    assert "data: [DONE]" in lines
    assert "".join(e["choices"][0]["text"] for e in events) == expected.text != ""
    assert events[-1]["choices"][0]["finish_reason"] == "length"


def test_detection_reads_which_files_a_folder_holds(tmp_path):
    def folder(name, *files):
        (tmp_path / name).mkdir()
        for file in ("config.json", *files):
            (tmp_path / name / file).write_bytes(b"")
        return tmp_path / name

    assert detect_format(folder("safetensors", "model.safetensors")) == "hf"
    assert detect_format(folder("sharded", "model.safetensors.index.json")) == "hf"
    assert detect_format(folder("bin", "pytorch_model.bin")) == "hf"
    assert detect_format(folder("both", "model.onnx", "model.safetensors")) == "onnx"  # no torch when ONNX will do
    (tmp_path / "no-config").mkdir()
    (tmp_path / "no-config" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not an HF model folder"):
        detect_format(tmp_path / "no-config")


def test_a_folder_without_tokenizer_json_names_the_file_and_the_fix(tiny_llama_dir, tmp_path, capsys):
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_llama_dir, folder)
    (folder / "tokenizer.json").unlink()

    with pytest.raises(ValueError, match=r"no-tokenizer/tokenizer\.json is missing; save the fast tokenizer") as error:
        load(folder)
    exit_code = main(["generate", str(folder), "hello"])

    assert "save_pretrained" in str(error.value) and "\n" not in str(error.value)
    assert exit_code == 2
    assert "tokenizer.json is missing" in capsys.readouterr().err


def test_without_torch_the_hf_backend_says_what_to_install(tiny_llama_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError

    needs = r"the hf backend needs torch and transformers \(pip install 'edgedistill\[build\]'\)"
    with pytest.raises(ValueError, match=needs):
        load(tiny_llama_dir)
