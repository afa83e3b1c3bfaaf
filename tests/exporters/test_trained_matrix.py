"""Every writable format of tiny Llama (tied), Mistral (untied lm_head), Qwen2 (GQA + q/k/v
biases) and a head-pruned Llama, each trained for 300 steps on the bundled text so that
quantized parity means something, loads in its real runtime and passes its gate.

k-quants need 256-wide rows, which these 64-wide models lack (that refusal and the
k-quants themselves are tested on the trained demo teacher in test_quantized.py).
"""

import shutil

import pytest
import torch

from edgedistill.config import VerifyConfig
from edgedistill.exporters.verify import check_artifact
from edgedistill.hf import load_model, load_tokenizer

ONNX = ("fp32", "int8", "int4", "int8_dynamic")
GGUF = ("f16", "q8_0", "q4_0")
STEPS = 300


def _train(model_dir, steps: int = STEPS, seed: int = 0) -> None:
    """Plain next-token training on the tiny corpus, in place (a few seconds on 2 cores)."""
    from edgedistill.config import DataConfig
    from edgedistill.data import packed_sequences

    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    train, _ = packed_sequences(DataConfig(seq_len=64, max_tokens=60000), tokenizer, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = train[torch.randint(0, len(train), (16,), generator=generator)]
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(model_dir, safe_serialization=True)


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory, tiny_llama_dir, tiny_mistral_dir, tiny_qwen2_dir):
    from edgedistill.pipeline.prune import prune_model
    from edgedistill.pipeline.prune_targets import PruneShape

    root = tmp_path_factory.mktemp("trained")
    models = {}
    for name, source in (("llama-tied", tiny_llama_dir), ("mistral-untied", tiny_mistral_dir), ("qwen2-bias", tiny_qwen2_dir)):
        shutil.copytree(source, root / name)
        _train(root / name)
        models[name] = root / name
    # heads, hidden and MLP pruned from the trained Llama (n_heads * head_dim != hidden), then healed
    teacher = load_model(models["llama-tied"])
    student, _ = prune_model(teacher, PruneShape(48, 96, 1, 2), torch.randint(0, 512, (2, 16)))
    student.save_pretrained(root / "llama-pruned")
    load_tokenizer(models["llama-tied"]).save_pretrained(root / "llama-pruned")
    _train(root / "llama-pruned", steps=150)
    models["llama-pruned"] = root / "llama-pruned"
    return models


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama-tied", "mistral-untied", "qwen2-bias", "llama-pruned"])
def test_every_format_of_a_trained_tiny_model_passes_its_gate(name, trained_models, tmp_path):
    from edgedistill.exporters.gguf import export_gguf
    from edgedistill.exporters.importance_matrix import measure
    from edgedistill.exporters.onnx import export_onnx

    model_dir = trained_models[name]
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    config = VerifyConfig(positions=64, greedy_tokens=24)
    results = {}
    for quantization in ONNX:
        export_onnx(model_dir, tmp_path / quantization, quantization)
        results[f"onnx-{quantization}"] = check_artifact(model, tokenizer, tmp_path / quantization, "onnx", quantization, config)
    importance, _ = measure(model_dir, "builtin:tiny-corpus")  # as the export stage does
    for quantization in GGUF:
        path = tmp_path / f"{quantization}.gguf"
        export_gguf(model_dir, path, quantization, importance)
        results[f"gguf-{quantization}"] = check_artifact(model, tokenizer, path, "gguf", quantization, config)

    failed = {artifact: r["failures"] for artifact, r in results.items() if not r["device_ready"]}
    assert not failed
    assert all(r["tokenizer_match"] for r in results.values())
    for lossless in ("onnx-fp32", "gguf-f16"):  # the bar for lossless formats
        assert results[lossless]["top1_agreement"] >= 0.995 and results[lossless]["greedy_match"]
    assert results["gguf-q8_0"]["top1_agreement"] >= 0.97
