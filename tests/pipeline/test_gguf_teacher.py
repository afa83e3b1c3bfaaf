"""Teachers from GGUF files: the registry-shipped real models (installed by the real-models
extra, as CI does) import into cached HF folders whose tokenizers give llama.cpp's ids, and
bad files are refused in one line before anything is written."""

import json

import numpy as np
import pytest

from edgedistill.errors import UserError
from edgedistill.pipeline import gguf_teacher
from edgedistill.pipeline.gguf_tokenizer import sentencepiece_merges
from edgedistill.pipeline.teacher import resolve_source

# code, digits, non-ASCII, emoji, whitespace runs, HTML, a URL
MIXED_TEXT = ("def main(x):\n    return x ** 2  # squares\n\n\tIndented\ttabs   and    runs\n"
              "Prices: 12345 3.14159 1,000,000 2026-12-06\nNon-ASCII: café naïve Straße 東京 Привет мир\n"
              "Emoji: 🚀🔥 👍🏽 end. <b>html</b> URL https://example.com/a?b=c&d=e  \n\n\n  trailing  ")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch, request):
    if "real" not in request.node.name:  # real models import once into the shared cache
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _real_folder(name: str):
    try:
        return gguf_teacher.import_gguf(gguf_teacher.REAL_MODEL_BUILTINS[name].locate())
    except UserError as exc:
        pytest.skip(str(exc))  # the real-models extra is not installed (CI installs it)


def test_sentencepiece_merges_rank_every_split_by_the_merged_pieces_score():
    tokens = ["a", "b", "c", "ab", "bc", "abc", "<0x41>"]
    scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0, 0.0]
    types = [1, 1, 1, 1, 1, 1, 6]

    merges = sentencepiece_merges(tokens, scores, types)

    # "bc" outranks "ab" (higher score); "abc" has two splits, both after them
    assert merges == [["b", "c"], ["a", "b"], ["a", "bc"], ["ab", "c"]]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma3-270m"])
def test_real_tokenizers_give_llama_cpps_ids_on_mixed_text(name):
    import llama_cpp
    from transformers import AutoTokenizer

    folder = _real_folder(name)
    gguf_path = (folder / "SOURCE").read_text(encoding="utf-8").split("dequantized from ", 1)[1].strip()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    vocab = llama_cpp.Llama(model_path=gguf_path, vocab_only=True, verbose=False)

    hf_ids = tokenizer(MIXED_TEXT, add_special_tokens=False)["input_ids"]

    assert hf_ids == vocab.tokenize(MIXED_TEXT.encode(), add_bos=False, special=True)
    assert tokenizer.decode(hf_ids) == MIXED_TEXT


@pytest.mark.slow
def test_real_builtin_teacher_resolves_to_a_cached_hf_folder():
    folder = _real_folder("smollm2-135m-instruct")

    source = resolve_source("builtin:smollm2-135m-instruct")

    assert source["kind"] == "local" and source["path"] == str(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152
    assert (folder / "chat_template.jinja").is_file()  # the instruct model's template travels
    assert not list(folder.parent.glob("*.partial-*"))


def test_a_file_that_is_not_gguf_is_one_line_and_writes_nothing(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a gguf file at all" * 10)

    with pytest.raises(UserError, match="model.gguf is not a readable GGUF file"):
        resolve_source(str(bogus))
    assert not (tmp_path / "cache" / "edgedistill" / "gguf-teachers").exists()


def _tiny_gguf(path, architecture: str, rows: int = 8):
    import gguf

    writer = gguf.GGUFWriter(path, architecture)
    writer.add_tensor("token_embd.weight", np.zeros((rows, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_unsupported_gguf_architecture_names_the_supported_ones(tmp_path):
    path = _tiny_gguf(tmp_path / "bert.gguf", "bert")

    with pytest.raises(UserError, match="GGUF architecture 'bert' is not supported; supported: llama, qwen2, mistral"):
        gguf_teacher.import_gguf(path)
    assert not (tmp_path / "cache" / "edgedistill" / "gguf-teachers").exists()


def test_a_checkpoint_too_large_for_memory_is_refused_before_loading(tmp_path, monkeypatch):
    path = _tiny_gguf(tmp_path / "llama.gguf", "llama", rows=1024)
    monkeypatch.setattr(gguf_teacher, "available_memory", lambda: 64 * 1024)

    with pytest.raises(UserError, match=r"importing 0M parameters as fp32 needs about 0.0 GiB but 0.0 GiB is available"):
        gguf_teacher.import_gguf(path)
