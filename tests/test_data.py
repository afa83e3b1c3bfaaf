import json

import pytest
import torch

from edgedistill.config import DataConfig
from edgedistill.errors import UserError
from edgedistill.hf import load_tokenizer
from edgedistill.data import load_documents, packed_sequences


def test_packing_split_is_deterministic_and_disjoint(tiny_llama_dir):
    tokenizer = load_tokenizer(tiny_llama_dir)
    cfg = DataConfig(seq_len=32, validation_fraction=0.1, max_tokens=5000)

    train, heldout = packed_sequences(cfg, tokenizer, seed=3)
    train_again, _ = packed_sequences(cfg, tokenizer, seed=3)
    train_other, _ = packed_sequences(cfg, tokenizer, seed=4)

    assert train.shape[1] == heldout.shape[1] == 32
    assert len(train) + len(heldout) == 5000 // 32
    assert len(heldout) == int(5000 // 32 * 0.1)
    assert (train == train_again).all()
    assert not (train == train_other).all()
    train_rows = {tuple(row.tolist()) for row in train}
    assert not any(tuple(row.tolist()) in train_rows for row in heldout)


def test_folder_of_text_files_is_read_in_path_order(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "skip.md").write_text("not text data")

    assert load_documents(str(tmp_path)) == ["first", "second"]


def test_missing_or_too_small_data_is_a_user_error(tmp_path, tiny_llama_dir):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("only a few words")
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(UserError, match="does not exist"):
        load_documents(str(tmp_path / "nope.txt"))
    with pytest.raises(UserError, match="holds no .txt or .jsonl files"):
        load_documents(str(empty))
    with pytest.raises(UserError, match="fewer than two sequences"):
        packed_sequences(DataConfig(path=str(tiny), seq_len=64), load_tokenizer(tiny_llama_dir), seed=0)


def test_builtin_pydocs_sources_read_one_document_per_page(tiny_llama_dir):
    from edgedistill.demo import pydocs
    from edgedistill.data import data_files, eval_windows

    test_docs = load_documents("builtin:pydocs-test")
    assert test_docs == pydocs.texts("test") and len(test_docs) >= 10
    assert data_files("builtin:pydocs")[0].name == "train.jsonl.gz"  # what the cache key hashes
    tokenizer = load_tokenizer(tiny_llama_dir)
    windows = eval_windows("builtin:pydocs-test", tokenizer, 64, max_windows=5)
    assert windows.shape == (5, 64)
    from edgedistill.data import token_stream

    stream = token_stream(test_docs[:1], tokenizer)
    assert windows[0].tolist() == stream[:64]  # document order, no shuffle
    with pytest.raises(UserError, match="bench.eval_path '/nope' does not exist"):
        eval_windows("/nope", tokenizer, 64)


def test_jsonl_rows_are_documents_and_bad_rows_are_named(tmp_path):
    (tmp_path / "a.txt").write_text("plain file")
    (tmp_path / "b.jsonl").write_text('{"text": "row one", "id": 1}\n\n{"text": "row two"}\n', encoding="utf-8")
    (tmp_path / "ignored.md").write_text("not data")

    assert load_documents(str(tmp_path)) == ["plain file", "row one", "row two"]

    bad = tmp_path / "bad" / "rows.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"prompt": "q", "answer": "a"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"line 1 is not a data row \(found: answer, prompt\); give a string 'text'"):
        load_documents(str(bad))
    bad.write_text('{"text": "ok"}\n{oops\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 2 is not JSON"):
        load_documents(str(bad.parent))
    only_md = tmp_path / "md"
    only_md.mkdir()
    (only_md / "x.md").write_text("no")
    with pytest.raises(UserError, match="holds no .txt or .jsonl files"):
        load_documents(str(only_md))


def _packed_config(path, **overrides):
    return DataConfig(path=str(path), seq_len=16, validation_fraction=0.2, **overrides)


def test_prompt_response_rows_train_on_the_response_and_eos_only(tmp_path, tiny_llama_dir):
    from edgedistill.data import encode_row, next_token_labels, packed_examples

    tokenizer = load_tokenizer(tiny_llama_dir)
    row = {"prompt": "How do I open a file? ", "response": "Use open(path)."}
    ids, targets = encode_row(row, tokenizer)
    prompt_ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(row["response"], add_special_tokens=False)["input_ids"]
    assert ids == prompt_ids + response_ids + [tokenizer.eos_token_id]
    assert targets == [False] * len(prompt_ids) + [True] * (len(response_ids) + 1)

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for _ in range(40)), encoding="utf-8")
    train, heldout = packed_examples(_packed_config(data), tokenizer, seed=0)
    labels = next_token_labels(train.ids, train.targets)
    kept = labels[labels != -100]
    # every trained label is a response token or EOS, never a prompt-only token
    assert set(kept.tolist()) <= set(response_ids) | {tokenizer.eos_token_id}
    assert (labels == -100).any() and len(heldout) >= 1


def test_chat_rows_train_on_assistant_turns_with_the_chat_template(tmp_path, tiny_llama_dir):
    from edgedistill.data import encode_row
    from edgedistill.runtime.chat import CHATML_TEMPLATE

    tokenizer = load_tokenizer(tiny_llama_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a list?"},
                {"role": "assistant", "content": "A mutable sequence."}, {"role": "user", "content": "And a tuple?"},
                {"role": "assistant", "content": "An immutable one."}]
    with pytest.raises(UserError, match="no chat template; set data.chat_template"):
        encode_row({"messages": messages}, tokenizer)
    ids, targets = encode_row({"messages": messages}, tokenizer, chat_template="chatml")
    text = tokenizer.decode([i for i, t in zip(ids, targets) if t], skip_special_tokens=False)
    # the assistant turns (with their end marker), never the system/user text or the role headers
    assert "A mutable sequence." in text and "An immutable one." in text
    assert "What is a list" not in text and "Be brief" not in text and "assistant" not in text
    assert targets[-1] and ids[-1] == tokenizer.eos_token_id
    tokenizer.chat_template = CHATML_TEMPLATE  # the tokenizer's own template is used when none is set
    assert encode_row({"messages": messages}, tokenizer) == (ids, targets)


def test_hf_dataset_folder_is_a_data_source_and_bad_rows_are_named(tmp_path, tiny_llama_dir):
    import datasets

    from edgedistill.data import data_files, load_rows, packed_examples

    folder = tmp_path / "ds"
    rows = [{"prompt": f"Question {i}: ", "response": f"answer number {i}."} for i in range(60)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(folder))
    assert load_rows(str(folder)) == rows
    assert data_files(str(folder)) and all(f.is_file() for f in data_files(str(folder)))
    with pytest.raises(UserError, match="has splits train, not 'test'"):
        load_rows(str(folder), split="test")
    train, _ = packed_examples(_packed_config(folder), load_tokenizer(tiny_llama_dir), seed=0)
    assert train.ids.shape[1] == 16 and train.targets.dtype == torch.bool

    bad = tmp_path / "bad"
    datasets.Dataset.from_list([{"question": "q"}]).save_to_disk(str(bad))
    with pytest.raises(UserError, match=r"dataset .*bad row 0 is not a data row \(found: question\)"):
        load_rows(str(bad))
