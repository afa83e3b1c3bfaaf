import json

from transformers import AutoConfig

from edgedistill.demo.tiny import TINY_CORPUS, TOKENIZER_VOCAB_SIZE
from edgedistill.hf import load_tokenizer


def test_tokenizer_round_trips_the_corpus_byte_for_byte(tiny_llama_dir):
    tokenizer = load_tokenizer(tiny_llama_dir)
    text = TINY_CORPUS.read_text(encoding="utf-8")

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]

    assert tokenizer.decode(ids) == text
    assert len(tokenizer) == TOKENIZER_VOCAB_SIZE
    assert tokenizer("hello")["input_ids"] == tokenizer("hello", add_special_tokens=False)["input_ids"]  # no BOS added


def test_tiny_teachers_are_standard_gqa_configs(tiny_llama_dir, tiny_qwen2_dir):
    llama, qwen2 = AutoConfig.from_pretrained(tiny_llama_dir), AutoConfig.from_pretrained(tiny_qwen2_dir)

    assert (llama.model_type, qwen2.model_type) == ("llama", "qwen2")
    for config in (llama, qwen2):
        assert config.num_attention_heads == 2 * config.num_key_value_heads
        assert config.vocab_size == TOKENIZER_VOCAB_SIZE
    assert llama.tie_word_embeddings and not qwen2.tie_word_embeddings
    assert json.loads((tiny_llama_dir / "tokenizer_config.json").read_text())["eos_token"] == "<|eos|>"
