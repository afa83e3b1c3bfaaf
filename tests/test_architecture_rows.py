"""Every row of the architecture table builds end to end from its tiny random teacher:
pruned along every dimension the row allows, distilled, exported to ONNX and GGUF, loaded
by onnxruntime and llama.cpp and gated against torch. Rows a recipe asks too much of are
refused at preflight, before anything is written."""

import pytest

from edgedistill.architectures import ARCHITECTURES, PRUNE_DIMENSIONS, supported_models_table
from edgedistill.build import build
from edgedistill.recipe_loader import load_recipe
from edgedistill.demo.tiny import TINY_TEACHERS
from edgedistill.errors import UserError

FAST = ["distill.steps=20", "bench.enabled=false", "export.onnx=[fp32,int8]", "export.gguf=[f16,q8_0]"]
# a ratio per dimension: 2 of 4 layers, 1 of 2 KV groups, 32 of 64 hidden, 128 of 256 MLP channels
CUTS = {"heads": "prune.kv_heads_keep=0.5", "hidden": "prune.ratios.hidden=0.5", "depth": "prune.ratios.layers=0.5",
        "mlp": "prune.ratios.mlp=0.5"}
ROWS = {"tiny-llama3": "llama", "tiny-qwen3": "qwen3", "tiny-gemma3": "gemma3", "tiny-phi3": "phi3"}


def test_every_row_has_a_tiny_teacher_and_a_line_in_the_supported_models_table():
    assert {facts["model_type"] for facts in TINY_TEACHERS.values()} == set(ARCHITECTURES)
    table = supported_models_table()
    for row in ARCHITECTURES.values():
        assert f"| `{row.model_type}` | {row.family} |" in table
        assert set(row.prune) <= set(PRUNE_DIMENSIONS)


@pytest.mark.slow
@pytest.mark.parametrize("teacher", ROWS)
def test_a_tiny_teacher_of_each_row_is_pruned_exported_and_gated_end_to_end(teacher, tmp_path):
    row = ARCHITECTURES[TINY_TEACHERS[teacher]["model_type"]]
    cuts = [CUTS[dimension] for dimension in row.prune]
    manifest = build(load_recipe("tiny", FAST + [f"teacher=builtin:{teacher}", "prune.strategy=ratios", *cuts]), tmp_path)

    assert manifest["status"] == "complete", [(a["name"], a["parity"]["failures"]) for a in manifest["artifacts"]]
    entries = {a["name"]: a for a in manifest["artifacts"]}
    assert set(entries) == {"onnx-fp32", "onnx-int8", "gguf-f16", "gguf-q8_0"}
    assert all(a["parity"]["device_ready"] for a in manifest["artifacts"])
    assert entries["gguf-f16"]["facts"]["gguf_arch"] == ROWS[teacher]
    metrics = manifest["metrics"]
    assert metrics["pruned_num_hidden_layers"] == (TINY_TEACHERS[teacher]["num_hidden_layers"] // 2 if "depth" in row.prune else 4)
    if "hidden" in row.prune:
        assert metrics["pruned_hidden_size"] == 32 and metrics["pruned_num_key_value_heads"] == 1


def test_a_dimension_the_row_cannot_prune_is_refused_at_preflight(tmp_path):
    recipe = load_recipe("tiny", FAST + ["teacher=builtin:tiny-phi3", "prune.strategy=mlp"])

    with pytest.raises(UserError, match=r"pruning mlp of phi3 \(Phi-3\) is not supported .* it prunes depth"):
        build(recipe, tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_rope_scaling_gguf_cannot_reproduce_is_refused_at_preflight(tmp_path):
    import json
    import shutil

    from edgedistill.demo.tiny import build_tiny_teacher

    teacher = build_tiny_teacher("tiny-qwen3", tmp_path / "teacher")
    config = json.loads((teacher / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}
    (teacher / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"

    with pytest.raises(UserError, match="GGUF export of qwen3 does not reproduce rope_scaling type 'yarn'"):
        build(load_recipe("tiny", FAST + [f"teacher={teacher}"]), out)
    assert not out.exists() or not any(out.iterdir())
    shutil.rmtree(teacher)


def _teacher_with_tokenizer(tmp_path, edit):
    import json

    from edgedistill.demo.tiny import build_tiny_teacher

    teacher = build_tiny_teacher("tiny-llama", tmp_path / "teacher")
    data = json.loads((teacher / "tokenizer.json").read_text())
    edit(data)
    (teacher / "tokenizer.json").write_text(json.dumps(data))
    return teacher


def test_a_tokenizer_gguf_cannot_reproduce_is_refused_at_preflight(tmp_path):
    split = {"type": "Split", "pattern": {"Regex": r"\p{N}{1,5}"}, "behavior": "Isolated", "invert": False}
    teacher = _teacher_with_tokenizer(tmp_path, lambda data: data.update(pre_tokenizer={
        "type": "Sequence", "pretokenizers": [split, {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}))
    out = tmp_path / "out"

    with pytest.raises(UserError, match=r"pre-tokenizer part Split\(regex .* has no llama.cpp equivalent"):
        build(load_recipe("tiny", FAST + [f"teacher={teacher}"]), out)
    assert not out.exists() or not any(out.iterdir())
    # ONNX carries the tokenizer.json itself: without GGUF the same teacher is accepted
    from edgedistill.preflight import preflight

    preflight(load_recipe("tiny", FAST + [f"teacher={teacher}", "export.gguf=[]"]))


def test_a_token_id_beyond_the_embedding_is_refused_at_preflight(tmp_path):
    teacher = _teacher_with_tokenizer(tmp_path, lambda data: data["added_tokens"].append(
        {"id": 600, "content": "<|extra|>", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}))

    with pytest.raises(UserError, match="token id 600 has no embedding row \\(vocab_size 512\\)"):
        build(load_recipe("tiny", FAST + [f"teacher={teacher}"]), tmp_path / "out")


def test_a_bos_tokenizer_opens_every_window_and_every_text_prompt_with_bos(tmp_path):
    """Llama 3 / Gemma tokenizers put BOS before a text and their models degrade without it
    (Gemma 3 270M: perplexity 26 with, 189 without): training windows open with BOS, and
    a text prompt gets it in every runtime, as the HF tokenizer (and llama.cpp) give it."""
    import json

    from edgedistill.config import DataConfig
    from edgedistill.demo.tiny import build_tiny_teacher
    from edgedistill.exporters.gguf import export_gguf
    from edgedistill.exporters.onnx import export_onnx
    from edgedistill.hf import load_tokenizer
    from edgedistill.data import packed_examples
    from edgedistill.runtime import load

    teacher = build_tiny_teacher("tiny-llama3", tmp_path / "teacher")
    data = json.loads((teacher / "tokenizer.json").read_text())
    bos = {"SpecialToken": {"id": "<|bos|>", "type_id": 0}}
    data["post_processor"] = {"type": "TemplateProcessing", "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, bos, {"Sequence": {"id": "B", "type_id": 1}}],
                              "special_tokens": {"<|bos|>": {"id": "<|bos|>", "ids": [0], "tokens": ["<|bos|>"]}}}
    (teacher / "tokenizer.json").write_text(json.dumps(data))
    tokenizer = load_tokenizer(teacher)
    text = "The json module exposes an API."
    expected = tokenizer(text)["input_ids"]
    assert expected[0] == tokenizer.bos_token_id == 0

    train, _ = packed_examples(DataConfig(seq_len=32, max_tokens=4000), tokenizer, seed=0)
    assert (train.ids[:, 0] == 0).all() and not train.targets[:, 0].any()
    assert (train.ids[:, 1:] != 0).any(dim=1).all()  # the rest is text

    export_gguf(teacher, tmp_path / "m.gguf", "f16")
    export_onnx(teacher, tmp_path / "onnx", "fp32")
    for path, backend in ((tmp_path / "m.gguf", None), (tmp_path / "onnx", None), (teacher, "hf")):
        model = load(path, backend=backend)
        assert list(model.prepare(text).ids) == expected, path
        assert model.encode(text) == expected[1:]  # encode itself adds nothing


@pytest.mark.slow
def test_real_gemma3_pruned_in_width_and_depth_builds_and_loads_in_both_runtimes(tmp_path):
    """builtin:gemma3-270m through the gemma3-270m-smoke recipe on a smaller budget: the
    pruned student (hidden 512, MLP 1024, 12 layers) loads in onnxruntime and llama.cpp
    and is measured against torch (docs/export.md has the full recipe's numbers)."""
    from edgedistill.pipeline.gguf_teacher import REAL_MODEL_BUILTINS

    try:
        REAL_MODEL_BUILTINS["gemma3-270m"].locate()
    except UserError as exc:
        pytest.skip(str(exc))  # the real-models extra is not installed (CI installs it)
    recipe = load_recipe("gemma3-270m-smoke", ["distill.steps=2", "export.onnx=[fp32]", "export.gguf=[q8_0]"])

    manifest = build(recipe, tmp_path)

    entries = {a["name"]: a for a in manifest["artifacts"]}
    assert manifest["metrics"]["pruned_hidden_size"] == 512 and manifest["metrics"]["pruned_num_hidden_layers"] == 12
    assert entries["onnx-fp32"]["parity"]["device_ready"], entries["onnx-fp32"]["parity"]["failures"]
    assert entries["onnx-fp32"]["parity"]["tokenizer_match"] and entries["gguf-q8_0"]["parity"]["tokenizer_match"]
    assert entries["gguf-q8_0"]["facts"]["gguf_arch"] == "gemma3"
    assert entries["gguf-q8_0"]["parity"]["mean_kl"] < 0.05
