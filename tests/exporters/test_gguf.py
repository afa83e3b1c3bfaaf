import numpy as np
import pytest
import torch
from gguf import GGUFReader

from edgedistill.errors import UserError
from edgedistill.architectures import ARCHITECTURES, gguf_tensor_name
from edgedistill.exporters.gguf import StudentGGUFWriter, export_gguf, permute_for_llama_rope
from edgedistill.exporters.verify import TOKENIZER_TEXTS, compare_logits, torch_logits
from edgedistill.hf import load_model, load_tokenizer
from edgedistill.runtime import load

REQUIRED_KEYS = (
    "general.architecture", "{arch}.context_length", "{arch}.embedding_length", "{arch}.block_count",
    "{arch}.feed_forward_length", "{arch}.attention.head_count", "{arch}.attention.head_count_kv",
    "{arch}.attention.layer_norm_rms_epsilon", "{arch}.rope.freq_base", "tokenizer.ggml.model",
    "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.eos_token_id",
    "edgedistill.quantization",
)


def test_llama_rope_permutation_interleaves_halves():
    head_dim = 4
    rows = np.arange(2 * head_dim, dtype=np.float32)[:, None]  # 2 heads, rows 0..7

    permuted = permute_for_llama_rope(rows, num_heads=2, head_dim=head_dim)

    # per head: HF halves (0,1 | 2,3) become llama.cpp pairs (0,2, 1,3)
    assert permuted[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_tensor_names_come_from_the_table():
    spec = ARCHITECTURES["qwen2"].gguf

    assert gguf_tensor_name(spec, "model.layers.11.self_attn.k_proj.bias") == "blk.11.attn_k.bias"
    assert gguf_tensor_name(spec, "model.embed_tokens.weight") == "token_embd.weight"
    assert gguf_tensor_name(ARCHITECTURES["gemma3_text"].gguf, "model.layers.2.pre_feedforward_layernorm.weight") == \
        "blk.2.ffn_norm.weight"
    with pytest.raises(UserError, match="has no GGUF name"):
        gguf_tensor_name(ARCHITECTURES["llama"].gguf, "model.layers.0.self_attn.q_proj.bias")


@pytest.mark.parametrize(("fixture", "arch"), [("tiny_llama_dir", "llama"), ("tiny_qwen2_dir", "qwen2")])
def test_f32_gguf_reads_back_and_matches_torch_in_llama_cpp(fixture, arch, request, tmp_path):
    model_dir = request.getfixturevalue(fixture)
    path = tmp_path / "model.bin"  # the name says nothing: detection reads the magic bytes

    facts = export_gguf(model_dir, path, "f32")

    reader = GGUFReader(path)
    for key in REQUIRED_KEYS:
        assert key.format(arch=arch) in reader.fields, key
    assert facts == {"gguf_arch": arch, "tensor_types": {"f32": len(reader.tensors)}, "fallbacks": []}
    torch_model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    runtime_model = load(path)
    ids = list(range(3, 60))
    measured = compare_logits(torch_logits(torch_model, ids), runtime_model.logits(ids))
    assert measured["max_abs_logit_diff"] < 1e-4
    assert measured["top1_agreement"] == 1.0
    for text in TOKENIZER_TEXTS:
        assert runtime_model.encode(text) == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_tied_embedding_writes_no_output_tensor(tiny_llama_dir, tiny_qwen2_dir, tmp_path):
    export_gguf(tiny_llama_dir, tmp_path / "tied.gguf", "f16")
    export_gguf(tiny_qwen2_dir, tmp_path / "untied.gguf", "f16")

    tied = {t.name for t in GGUFReader(tmp_path / "tied.gguf").tensors}
    untied = {t.name for t in GGUFReader(tmp_path / "untied.gguf").tensors}

    assert "output.weight" not in tied and "token_embd.weight" in tied
    assert "output.weight" in untied


def test_q8_0_writes_quantized_matrices_and_f32_norms(tiny_llama_dir, tmp_path):
    facts = export_gguf(tiny_llama_dir, tmp_path / "q8.gguf", "q8_0")

    types = {t.name: t.tensor_type.name for t in GGUFReader(tmp_path / "q8.gguf").tensors}

    assert types["blk.0.ffn_up.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert facts["tensor_types"] == {"f32": 5, "q8_0": 15}


def test_writer_refuses_steps_out_of_order(tiny_llama_dir, tmp_path):
    writer = StudentGGUFWriter(tiny_llama_dir, tmp_path / "x.gguf", "f16")

    with pytest.raises(RuntimeError, match="in state 'new', expected 'tokenizer' before 'tensors'"):
        writer.add_tensors()


def test_unknown_quantization_and_architecture_are_user_errors(tiny_llama_dir, tmp_path):
    config = (tiny_llama_dir / "config.json").read_text()
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(config.replace('"model_type": "llama"', '"model_type": "gpt2"'))

    with pytest.raises(UserError, match="unknown GGUF quantization 'q3_k'; supported: f32, f16, q8_0, q4_0"):
        export_gguf(tiny_llama_dir, tmp_path / "x.gguf", "q3_k")
    with pytest.raises(UserError, match="unsupported architecture 'gpt2'; supported: llama, mistral, qwen2, qwen3, gemma3_text, phi3"):
        export_gguf(odd, tmp_path / "y.gguf", "f16")


@pytest.mark.parametrize(("fixture", "arch"), [("tiny_llama_dir", "llama"), ("tiny_qwen2_dir", "llama")])
def test_a_pruned_model_exports_and_matches_in_llama_cpp_and_onnxruntime(fixture, arch, request, tmp_path):
    """Heads, hidden and MLP pruned: n_heads * head_dim != hidden_size. A qwen2 model is
    written as llama.cpp's `llama` arch (its `qwen2` arch rejects that shape)."""
    from edgedistill.config import VerifyConfig
    from edgedistill.exporters.onnx import export_onnx
    from edgedistill.exporters.verify import check_artifact
    from edgedistill.pipeline.prune import prune_model
    from edgedistill.pipeline.prune_targets import PruneShape

    teacher, tokenizer = load_model(request.getfixturevalue(fixture)), load_tokenizer(request.getfixturevalue(fixture))
    student, _ = prune_model(teacher, PruneShape(48, 96, 1, 2), torch.randint(0, 512, (2, 16)))
    student.save_pretrained(tmp_path / "student")
    tokenizer.save_pretrained(tmp_path / "student")

    facts = export_gguf(tmp_path / "student", tmp_path / "student.gguf", "f32")
    export_onnx(tmp_path / "student", tmp_path / "onnx", "fp32")

    assert facts["gguf_arch"] == arch
    cfg = VerifyConfig(positions=32, greedy_tokens=12)
    for path, fmt in ((tmp_path / "student.gguf", "gguf"), (tmp_path / "onnx", "onnx")):
        result = check_artifact(student, tokenizer, path, fmt, "f32" if fmt == "gguf" else "fp32", cfg)
        assert result["device_ready"], (fmt, result["failures"])


def test_the_chat_template_travels_into_the_gguf(chatml_llama_dir, tiny_llama_dir, tmp_path):
    import gguf

    from edgedistill.runtime.chat import CHATML_TEMPLATE

    export_gguf(chatml_llama_dir, tmp_path / "chat.gguf", "f16")
    field = gguf.GGUFReader(tmp_path / "chat.gguf").fields["tokenizer.chat_template"]
    assert bytes(field.parts[field.data[0]]).decode() == CHATML_TEMPLATE
    export_gguf(tiny_llama_dir, tmp_path / "plain.gguf", "f16")
    assert "tokenizer.chat_template" not in gguf.GGUFReader(tmp_path / "plain.gguf").fields


def _sentencepiece_style_llama(out_dir, vocab_size: int = 800):
    """A Llama whose tokenizer.json is SentencePiece-style BPE: metaspace ▁, byte fallback
    pieces <0x00>..<0xFF>, <unk>/<s>/</s> (the layout of Llama-2 / Mistral HF tokenizers)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from edgedistill.demo.tiny import TINY_CORPUS

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokenizer.train_from_iterator([TINY_CORPUS.read_text()], trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                                                 show_progress=False))
    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                 model_input_names=["input_ids", "attention_mask"])
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1,
                         eos_token_id=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out_dir)
    hf.save_pretrained(out_dir)
    return out_dir


def test_a_sentencepiece_style_tokenizer_is_written_as_llama_cpp_spm_with_scores(tmp_path):
    from edgedistill.config import VerifyConfig
    from edgedistill.exporters.verify import check_artifact

    model_dir = _sentencepiece_style_llama(tmp_path / "spm")
    export_gguf(model_dir, tmp_path / "spm.gguf", "f32")
    reader = GGUFReader(tmp_path / "spm.gguf")
    model_field = reader.fields["tokenizer.ggml.model"]
    assert bytes(model_field.parts[model_field.data[0]]).decode() == "llama"
    assert "tokenizer.ggml.scores" in reader.fields and "tokenizer.ggml.merges" not in reader.fields

    tokenizer, runtime_model = load_tokenizer(model_dir), load(tmp_path / "spm.gguf")
    for text in TOKENIZER_TEXTS + ("Hello\n\nworld", "a  b   c", "naïve café 東京"):
        assert runtime_model.encode(text) == tokenizer(text, add_special_tokens=False)["input_ids"], text
    result = check_artifact(load_model(model_dir), tokenizer, tmp_path / "spm.gguf", "gguf", "f32", VerifyConfig())
    assert result["device_ready"] and result["greedy_match"], result["failures"]


def test_a_tokenizer_llama_cpp_cannot_describe_is_a_user_error(tiny_llama_dir, tmp_path):
    import json
    import shutil

    model_dir = tmp_path / "wordpiece"
    shutil.copytree(tiny_llama_dir, model_dir)
    data = json.loads((model_dir / "tokenizer.json").read_text())
    data["model"]["type"] = "WordPiece"
    (model_dir / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="supports byte-level BPE .* and SentencePiece-style BPE with byte fallback"):
        export_gguf(model_dir, tmp_path / "w.gguf", "f16")


def test_linear_rope_scaling_matches_in_llama_cpp_and_other_scalings_are_refused(tiny_llama_dir, tmp_path):
    import json
    import shutil

    from edgedistill.config import VerifyConfig
    from edgedistill.exporters.verify import check_artifact

    model_dir = tmp_path / "scaled"
    shutil.copytree(tiny_llama_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "linear", "factor": 4.0}
    (model_dir / "config.json").write_text(json.dumps(config))
    export_gguf(model_dir, tmp_path / "scaled.gguf", "f32")
    fields = GGUFReader(tmp_path / "scaled.gguf").fields
    assert float(fields["llama.rope.scaling.factor"].parts[-1][0]) == 4.0
    result = check_artifact(load_model(model_dir), load_tokenizer(model_dir), tmp_path / "scaled.gguf", "gguf", "f32",
                            VerifyConfig(positions=96))
    assert result["device_ready"], result["failures"]  # a missing factor shifts every position past the first

    config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="does not reproduce rope_scaling type .yarn. \(supported: none, linear, llama3\)"):
        export_gguf(model_dir, tmp_path / "yarn.gguf", "f32")


def test_a_list_of_named_templates_exports_its_default_one_as_the_runtime_reads_it(tiny_llama_dir, tmp_path):
    import json
    import shutil

    import gguf

    from edgedistill.runtime.chat import CHATML_TEMPLATE
    from edgedistill.runtime.folder_meta import read_folder_metadata

    folder = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = [{"name": "tool_use", "template": "{{ tools }}"}, {"name": "default", "template": CHATML_TEMPLATE}]
    config_file.write_text(json.dumps(config))
    export_gguf(folder, tmp_path / "m.gguf", "f16")
    field = gguf.GGUFReader(tmp_path / "m.gguf").fields["tokenizer.chat_template"]
    assert bytes(field.parts[field.data[0]]).decode() == CHATML_TEMPLATE
    assert read_folder_metadata(folder, {}).chat_template.source == CHATML_TEMPLATE
