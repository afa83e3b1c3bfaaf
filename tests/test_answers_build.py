"""The smollm2-docs chain on a tiny chat model: the teacher's chat answers to documentation
questions mixed into logit KD, the teacher's own exports gated beside the student's, an
alternative (LoRA fine-tuning on the pages' answers) built into its own folder and measured
in the same bench, and the answer-level report with its recommendation."""

import json
import subprocess
import sys

import pytest
import torch

from edgedistill.hf import load_tokenizer
from edgedistill.pipeline.distill.chat_answers import conversation, mixed_windows
from edgedistill.data import Packed

RECIPE = """
teacher: {teacher}
seed: 0
data: {{path: builtin:pydocs, seq_len: 64, max_tokens: 6000, validation_fraction: 0.1}}
prune: {{strategy: ratios, ratios: {{mlp: 0.5, layers: 0.5}}, calibration_sequences: 2}}
distill:
  steps: 2
  batch_size: 4
  temperature: 1.0
  alpha: 0.7
  response_tokens: 12
  sample_temperature: 1.0  # a random tiny model loops when greedy: the filter would drop every answer
  answers: {{questions: 6, share: 0.5}}
export: {{onnx: [], gguf: [f16], teacher_gguf: [f16]}}
verify: {{positions: 16, greedy_tokens: 4}}
bench:
  student_api_mode: chat
  answer_tokens: 8
  decode_tokens: 4
  repeats: 1
  latency_prompts: 2
  concurrency: 1
  artifact_eval_windows: 2
  artifact_qa_pairs: 0
  answers: {{questions: builtin:pydocs-answers, test_pages: 3, independent: 3, paraphrased: 1}}
alternatives:
  lora-sft:
    distill.alpha: 0.0
    distill.lora_rank: 4
    distill.answers.source: reference
    export.teacher_gguf: []
    bench.enabled: false
"""


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgedistill.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=900)


def test_a_conversation_targets_the_answer_and_the_end_of_turn_only_when_the_teacher_stopped(chatml_llama_dir):
    tokenizer = load_tokenizer(chatml_llama_dir)
    row = {"messages": [{"role": "user", "content": "What does len() do?"}], "response": "It counts items.",
           "finish_reason": "stop"}
    ids, targets = conversation(row, tokenizer)
    answer = tokenizer("It counts items.", add_special_tokens=False)["input_ids"]
    assert ids[-len(answer) - 1:] == answer + [tokenizer.eos_token_id]
    assert targets == [False] * (len(ids) - len(answer) - 1) + [True] * (len(answer) + 1)
    prompt = tokenizer.apply_chat_template(row["messages"], add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(ids[:len(ids) - len(answer) - 1]) == prompt
    cut, cut_targets = conversation({**row, "finish_reason": "length"}, tokenizer)  # cut at max_tokens: no stop learnt
    assert cut == ids[:-1] and cut_targets == targets[:-1]


def test_answer_windows_are_repeated_to_their_share_and_never_dropped():
    docs = Packed(torch.zeros(30, 8, dtype=torch.long), torch.ones(30, 8, dtype=torch.bool))
    answers = Packed(torch.ones(4, 8, dtype=torch.long), torch.ones(4, 8, dtype=torch.bool))
    mixed = mixed_windows(docs, answers, 0.5)
    assert len(mixed) == 60 and int((mixed.ids[:, 0] == 1).sum()) == 30  # 7 copies and 2 of the 4 windows
    many = Packed(torch.ones(40, 8, dtype=torch.long), torch.ones(40, 8, dtype=torch.bool))
    assert len(mixed_windows(docs, many, 0.25)) == 70  # more than the share already: all kept once


@pytest.mark.slow
def test_docs_answers_teacher_exports_and_an_alternative_in_one_bench(chatml_llama_dir, tmp_path):
    recipe = tmp_path / "docs.yaml"
    recipe.write_text(RECIPE.format(teacher=chatml_llama_dir))
    main, alternative = tmp_path / "main", tmp_path / "lora"
    built = cli("build", recipe, "--out", main)
    assert built.returncode == 0, built.stderr[-3000:]
    manifest = json.loads((main / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["teacher_answers"] == 6 and metrics["answer_windows"] >= 1
    assert 0.4 < metrics["answer_windows_share"] < 0.6
    exports = manifest["stages"]["export"]["artifact"]["payload"]["exports"]
    assert [(e["name"], e["source"]) for e in exports] == [("gguf-f16", "student"), ("teacher-gguf-f16", "teacher")]
    parity = manifest["stages"]["verify"]["artifact"]["payload"]["results"]
    assert parity["teacher-gguf-f16"]["device_ready"]  # gated against the teacher it came from

    lora = cli("build", recipe, "--out", alternative, "--set", "alternative=lora-sft")
    assert lora.returncode == 0, lora.stderr[-3000:]
    lora_manifest = json.loads((alternative / "manifest.json").read_text())
    assert lora_manifest["recipe"]["name"] == "docs-lora-sft" and lora_manifest["metrics"]["reference_answers"] == 6
    student = json.loads((alternative / "student" / "config.json").read_text())
    assert student["num_hidden_layers"] == json.loads((main / "student" / "config.json").read_text())["num_hidden_layers"]
    assert not list((alternative / "student").glob("adapter_*"))  # merged: a plain model folder ships

    bench = cli("bench", main, "--with", alternative)
    assert bench.returncode == 0, bench.stderr[-3000:]
    results = json.loads((main / "bench" / "results.json").read_text())
    names = [a["name"] for a in results["artifacts"]]
    assert names == ["gguf-f16", "teacher-gguf-f16", "docs-lora-sft/gguf-f16"]
    assert [a["source"] for a in results["artifacts"]] == ["student", "teacher", "docs-lora-sft:student"]
    for entry in [results["teacher"], *results["artifacts"]]:
        quality = entry["answer_quality"]
        assert quality["questions"] == 6 and set(quality["by_set"]) == {"independent", "test-pages"}
        assert 0 <= quality["rouge_l"] <= 1 and entry["retention_of"] == "answers_rouge_l"
        assert entry["overdistill"]["answers"] == 8  # 6 questions, one of them asked in its 3 phrasings
    assert results["teacher"]["retention"] == 1.0
    for entry in results["artifacts"]:
        if entry["retention"] is not None:
            assert entry["retention"] == pytest.approx(entry["answer_quality"]["rouge_l"] / results["teacher"]["answer_quality"]["rouge_l"])
    assert results["recommendation"]["constraint"].startswith("retention >= 85%")
    report = (main / "bench" / "report.md").read_text()
    assert report.index("## Answers") < report.index("## Latency") and "## Recommendation" in report
    assert "teacher, only quantized" in report and "what-if: the teacher's traffic at API" in report
