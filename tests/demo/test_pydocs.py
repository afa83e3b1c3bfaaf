"""The committed docs corpus, its QA set and the committed demo teacher."""

from __future__ import annotations

import hashlib
import json

import pytest

from edgedistill.demo import pydocs
from edgedistill.pipeline.teacher import BUILTIN_FOLDERS

TEACHER = BUILTIN_FOLDERS["pydocs-teacher"]


def test_splits_are_disjoint_by_document():
    splits = {name: pydocs.documents(name) for name in pydocs.SPLITS}
    paths = {name: [row["path"] for row in rows] for name, rows in splits.items()}
    for name, names in paths.items():
        assert len(names) == len(set(names)), f"{name} repeats a document"
    assert not set(paths["train"]) & set(paths["test"])
    assert not set(paths["train"]) & set(paths["validation"])
    assert not set(paths["validation"]) & set(paths["test"])
    train_texts = {row["text"] for row in splits["train"]}
    assert not any(row["text"] in train_texts for row in splits["test"])  # no duplicate page under another name
    assert len(paths["test"]) >= 10 and sum(len(row["text"]) for row in splits["train"]) > 5_000_000


def test_provenance_matches_the_committed_files():
    record = json.loads((pydocs.PYDOCS / "PROVENANCE.json").read_text(encoding="utf-8"))
    assert "PSF" in record["licence"] and "python3.11-doc" in record["source"]
    for name, digest in record["files"].items():
        assert hashlib.sha256((pydocs.PYDOCS / name).read_bytes()).hexdigest() == digest, name
    for name in pydocs.SPLITS:
        assert record["splits"][name]["documents"] == len(pydocs.documents(name))


def test_qa_pairs_come_from_training_documents():
    pairs = pydocs.qa_pairs()
    assert len(pairs) >= 100
    train_paths = {row["path"] for row in pydocs.documents("train")}
    assert {pair["source"] for pair in pairs} <= train_paths
    train = {row["path"]: row["text"] for row in pydocs.documents("train")}
    for pair in pairs:  # scored text is exactly the text the models read
        assert pair["prompt"] + pair["answer"] in train[pair["source"]], pair["question"]
    assert any(pair["source"] == "glossary.rst" for pair in pairs)
    assert all(pair["question"] and pair["prompt"] and pair["answer"] for pair in pairs)


def test_tokenizer_round_trips_the_test_split_byte_for_byte():
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast.from_pretrained(TEACHER)
    raw = Tokenizer.from_file(str(TEACHER / "tokenizer.json"))  # what the torch-free runtime uses
    assert 8000 <= len(hf) <= 16384
    assert {hf.bos_token, hf.eos_token, hf.pad_token} == {"<|bos|>", "<|eos|>", "<|pad|>"}
    for text in pydocs.texts("test"):
        ids = hf(text, add_special_tokens=False)["input_ids"]
        assert raw.encode(text, add_special_tokens=False).ids == ids
        assert hf.decode(ids) == text
        assert raw.decode(ids, skip_special_tokens=False) == text


def test_teacher_shape_and_card():
    from edgedistill.hf import count_parameters_on_disk, read_config

    config = read_config(TEACHER)
    assert config["model_type"] == "llama"
    assert config["num_key_value_heads"] < config["num_attention_heads"]  # GQA
    assert config["hidden_size"] % 256 == 0 and (config["hidden_size"] // 2) % 256 == 0
    assert 8_000_000 <= count_parameters_on_disk(TEACHER) <= 30_000_000
    summary = json.loads((TEACHER / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["test"]["ppl"] < 0.5 * summary["unigram_test"]["ppl"]
    assert summary["test"]["top1"] > 2 * summary["unigram_test"]["top1"]
    assert summary["train_seconds"] <= 90 * 60
    card = (TEACHER / "README.md").read_text(encoding="utf-8")
    assert summary["command"] in card and "## Sample generations" in card


@pytest.mark.slow
def test_teacher_test_perplexity_reproduces_from_the_committed_weights():
    """The card's number is the committed model's number (fp16 weights, fp32 compute)."""
    from edgedistill.data import token_stream, windows
    from edgedistill.hf import load_model, load_tokenizer
    from edgedistill.pipeline.evaluate import score_windows

    summary = json.loads((TEACHER / "training_summary.json").read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(TEACHER)
    test_windows = windows(token_stream(pydocs.texts("test"), tokenizer), 512)
    measured = score_windows(load_model(TEACHER), test_windows)
    assert measured["tokens"] == summary["test"]["tokens"]
    assert measured["ppl"] == pytest.approx(summary["test"]["ppl"], rel=0.01)  # fp16 rounding of the weights
    assert measured["top1"] == pytest.approx(summary["test"]["top1"], abs=0.005)


def test_the_independent_questions_are_not_taken_from_the_pages():
    rows = [json.loads(line) for line in (pydocs.PYDOCS / "independent_qa.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 60 and len({row["id"] for row in rows}) == 60
    assert all(len(row["phrasings"]) == 3 and row["phrasings"][0] == row["question"] for row in rows)
    pages = " ".join(" ".join(row["text"].split()) for name in pydocs.SPLITS for row in pydocs.documents(name))
    for row in rows:  # written independently: no reference answer's sentence appears in the documentation
        for sentence in row["answer"].split(". "):
            words = sentence.split()
            assert len(words) < 8 or " ".join(words) not in pages, (row["id"], sentence)
