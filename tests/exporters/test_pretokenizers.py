"""Each byte-level pre-tokenizer row splits text in HF exactly as llama.cpp's pre-tokenizer of
that name does: a tiny model whose tokenizer.json carries the row is written to GGUF and
tokenized by llama.cpp, id for id on a mixed text. One that llama.cpp has no equivalent
for is refused naming the part."""

import json
import shutil

import pytest

from edgedistill.errors import UserError
from edgedistill.exporters.gguf import export_gguf
from edgedistill.exporters.pretokenizers import PRE_TOKENIZERS, hf_pre_tokenizer, llama_cpp_pre_tokenizer
from tests.pipeline.test_gguf_teacher import MIXED_TEXT

# contractions in capitals, digit runs, CR/LF mixes: where the regexes part ways
TEXT = MIXED_TEXT + "\nI'LL say DON'T we'd 1234567 x=12;y=345\r\n\r\n  \n end"


def _train_with(name: str, folder) -> None:
    """Retrain the folder's 512-token BPE with row ``name``'s pre-tokenizer, on the tiny
    corpus and TEXT, so merges reach across the boundaries where the rows differ."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from edgedistill.demo.tiny import SPECIAL_TOKENS, TINY_CORPUS

    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = Tokenizer.from_str(json.dumps({**data, "pre_tokenizer": hf_pre_tokenizer(name)})).pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=list(SPECIAL_TOKENS.values()), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TINY_CORPUS.read_text(encoding="utf-8").split("\n\n") + [TEXT] * 20, trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS).save_pretrained(folder)


@pytest.fixture(scope="module")
def ids_by_row(tmp_path_factory, tiny_llama_dir):
    """{row: (HF ids, llama.cpp ids)} on TEXT."""
    import llama_cpp
    from transformers import AutoTokenizer

    from edgedistill.runtime.gguf_metadata import read_gguf_metadata

    out = {}
    for name in PRE_TOKENIZERS:
        folder = tmp_path_factory.mktemp(f"pre-{name}") / "model"
        shutil.copytree(tiny_llama_dir, folder)
        _train_with(name, folder)
        path = folder.parent / "model.gguf"
        export_gguf(folder, path, "f16")
        assert read_gguf_metadata(path, {"tokenizer.ggml.pre"})["tokenizer.ggml.pre"] == name
        vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        hf_ids = AutoTokenizer.from_pretrained(folder)(TEXT, add_special_tokens=False)["input_ids"]
        out[name] = (hf_ids, vocab.tokenize(TEXT.encode(), add_bos=False, special=True))
    return out


@pytest.mark.parametrize("name", PRE_TOKENIZERS)
def test_hf_and_llama_cpp_give_the_same_ids(name, ids_by_row):
    hf_ids, llama_ids = ids_by_row[name]

    assert hf_ids == llama_ids


def test_the_rows_split_the_text_differently(ids_by_row):
    # otherwise the test above could not tell a wrong mapping from a right one
    assert len({tuple(hf_ids) for hf_ids, _ in ids_by_row.values()}) == len(PRE_TOKENIZERS)


def test_a_pre_tokenizer_llama_cpp_lacks_is_refused_naming_the_part():
    pre = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\p{N}{1,5}|\s+"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}

    with pytest.raises(UserError, match=r"tokenizer.json: pre-tokenizer part Split\(regex '\\\\p\{N\}\{1,5\}\|\\\\s\+', "
                                        r"Isolated\) has no llama.cpp equivalent .*export.gguf=\[\]"):
        llama_cpp_pre_tokenizer(pre)
    assert llama_cpp_pre_tokenizer({**PRE_TOKENIZERS["gpt-2"], "trim_offsets": True}) == "gpt-2"  # offsets only
