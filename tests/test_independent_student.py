"""An independent student (``student:``): the prune stage is skipped, and a student of
another tokenizer trains through the cross-tokenizer objectives end to end, or is refused
in one line when the objective compares logits token by token."""

from __future__ import annotations

import pytest

from edgedistill.build import build
from edgedistill.cli import main
from edgedistill.recipe_loader import load_recipe
from edgedistill.demo.tiny import build_tiny_teacher

FAST = ["distill.steps=4", "distill.batch_size=4", "bench.enabled=false", "export.onnx=[fp32]", "export.gguf=[f16]",
        "distill.temperature=1", "data.seq_len=32", "data.max_tokens=4000"]


@pytest.fixture(scope="module")
def other_tokenizer_student(tmp_path_factory):
    return build_tiny_teacher("tiny-qwen2", tmp_path_factory.mktemp("student") / "m", seed=3, tokenizer_vocab=360)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["uld", "gold"])
def test_a_student_of_another_tokenizer_distills_exports_and_passes_the_gate(other_tokenizer_student, tmp_path, objective):
    out = tmp_path / "build"
    manifest = build(load_recipe("tiny", [*FAST, f"student={other_tokenizer_student}", f"distill.objective={objective}"]),
                     out)
    stages = manifest["stages"]
    assert "prune" not in stages and stages["student"]["artifact"]["root"] == str(other_tokenizer_student)
    metrics = stages["distill"]["artifact"]["metrics"]
    assert metrics["cross_tokenizer_aligned_share"] > 0.9
    assert 0 < metrics["cross_tokenizer_one_to_one_share"] < 1  # different vocabularies: some groups are n:m
    assert metrics["student_teacher_val_uld"] > 0 and metrics["distill_steps"] == 4
    assert manifest["status"] == "complete"
    assert all(entry["device_ready"] for entry in stages["verify"]["artifact"]["payload"]["results"].values())


def test_an_independent_student_of_the_same_tokenizer_skips_pruning(tiny_qwen2_dir, tmp_path):
    manifest = build(load_recipe("tiny", [*FAST, f"student={tiny_qwen2_dir}"]), tmp_path / "build")
    assert "prune" not in manifest["stages"] and "student" in manifest["stages"]
    assert "cross_tokenizer_aligned_share" not in manifest["stages"]["distill"]["artifact"]["metrics"]


def test_prune_student_prunes_the_independent_student_before_distilling(tiny_qwen2_dir, tmp_path):
    sets = [*FAST, f"student={tiny_qwen2_dir}", "prune.student=true", "prune.target_params=0.6", "prune.round_to=16"]
    manifest = build(load_recipe("tiny", sets), tmp_path / "build")
    stages = manifest["stages"]
    assert list(stages)[:4] == ["teacher", "student", "prune", "distill"]
    prune = stages["prune"]["artifact"]["metrics"]
    assert prune["pruned_params"] < 0.65 * stages["student"]["artifact"]["metrics"]["student_init_params"]
    assert "student_init_params_mlp" in prune and "teacher_params_mlp" not in prune  # the student was cut, not the teacher
    assert stages["distill"]["artifact"]["metrics"]["student_params"] == prune["pruned_params"]
    assert manifest["status"] == "complete"


@pytest.mark.parametrize("sets, message", [
    (["distill.objective=forward_kl"], "tokenizers differ and distill.objective=forward_kl compares logits token by "
                                       "token: set distill.objective=uld or gold"),
    (["distill.objective=uld", "bench.enabled=true"], "set bench.enabled=false"),
    (["distill.objective=uld", "distill.teacher_topk=4"], "supports objective forward_kl only, not 'uld'"),
    (["distill.objective=uld", "distill.mode=on_policy"], "distill.objective=uld aligns an online local teacher"),
])
def test_mismatched_tokenizers_are_refused_in_one_line(other_tokenizer_student, tmp_path, capsys, sets, message):
    flags = [arg for s in [*FAST, f"student={other_tokenizer_student}", *sets] for arg in ("--set", s)]
    code = main(["build", "tiny", "--out", str(tmp_path / "b"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_the_sequence_mode_distills_a_student_of_another_tokenizer_by_text(other_tokenizer_student, tmp_path):
    sets = [*FAST, f"student={other_tokenizer_student}", "distill.mode=sequence", "distill.prompt_tokens=8",
            "distill.response_tokens=16", "distill.sequence.windows=48", "distill.sequence.topk=4"]
    manifest = build(load_recipe("tiny", sets), tmp_path / "build")
    metrics = manifest["stages"]["distill"]["artifact"]["metrics"]
    assert metrics["teacher_responses_kept"] > 0 and metrics["teacher_topk_aligned_share"] == 0.0  # text, not ids
    assert "student_teacher_val_kl" not in metrics  # no token-by-token comparison across vocabularies
    # but the same held-out measures as uld / gold, each model on its own tokens of the data's held-out text
    assert metrics["student_val_ppl"] > 1 and 0 <= metrics["student_teacher_val_top1_agreement"] <= 1
    assert metrics["student_teacher_val_uld"] > 0 and "sequence_student_val_ppl" in metrics
    assert manifest["status"] == "complete"
