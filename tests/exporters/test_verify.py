import numpy as np

from edgedistill.config import VerifyConfig
from edgedistill.exporters.formats import FORMATS, ParityThresholds
from edgedistill.exporters.gguf import export_gguf
from edgedistill.exporters.verify import check_artifact, compare_logits, judge
from edgedistill.hf import load_model, load_tokenizer


def test_compare_logits_golden():
    reference = np.array([[0.0, np.log(3.0)], [np.log(3.0), 0.0]])  # p = (1/4, 3/4), (3/4, 1/4)
    candidate = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])  # q = (1/2, 1/2), (3/4, 1/4)

    measured = compare_logits(reference, candidate)

    kl_first_row = 0.25 * np.log(0.25 / 0.5) + 0.75 * np.log(0.75 / 0.5)  # KL(p || q); second row is 0
    assert measured["max_abs_logit_diff"] == np.log(3.0)
    assert measured["logit_range"] == np.log(3.0)  # max - min of the reference
    assert measured["max_rel_logit_diff"] == 1.0
    assert measured["top1_agreement"] == 0.5  # row 0: argmax 1 vs 0 (tie -> first); row 1 agrees
    assert np.isclose(measured["mean_kl"], kl_first_row / 2)


def test_a_pick_within_the_tie_margin_agrees_and_is_counted_a_tie():
    # range 10 per row: margin 0.005 (5e-4 of it) is a tie, 0.02 (2e-3) is not
    reference = np.array([[10.0, 9.995, 0.0], [10.0, 9.98, 0.0], [10.0, 0.0, 5.0]])
    candidate = np.array([[9.99, 10.0, 0.0], [9.97, 10.0, 0.0], [10.0, 0.0, 5.0]])

    measured = compare_logits(reference, candidate)

    assert measured["top1_agreement"] == 2 / 3 and measured["top1_ties"] == 1


def test_greedy_continuations_that_part_at_a_tie_match_and_elsewhere_differ(monkeypatch):
    from edgedistill.exporters import verify

    # the reference's next-token logits after prompt + expected[:2]: token 7 best, 3 within 1e-3 of the range, 1 not
    row = np.zeros(10)
    row[7], row[3], row[1], row[0] = 10.0, 9.995, 9.9, -10.0
    seen = []
    monkeypatch.setattr(verify, "torch_logits", lambda model, ids: seen.append(ids) or np.stack([row] * len(ids)))
    expected = [4, 5, 7, 2]

    assert verify.greedy_agrees(None, [1, 2], expected, expected, None) == "same" and not seen
    assert verify.greedy_agrees(None, [1, 2], expected, [4, 5, 3, 8], None) == "tie"
    assert seen[-1] == [1, 2, 4, 5]  # scored where the two part
    assert verify.greedy_agrees(None, [1, 2], expected, [4, 5, 1, 8], None) == "differs"
    assert verify.greedy_agrees(None, [1, 2], expected, [4, 5], 3) == "tie"  # the artifact stopped: EOS (3) there ties
    assert verify.greedy_agrees(None, [1, 2], expected, [4, 5], None) == "differs"


def test_judge_lists_every_failed_threshold():
    thresholds = ParityThresholds(max_rel_logit=1e-3, max_mean_kl=1e-4, min_top1=0.99, greedy_must_match=True)
    result = {"max_abs_logit_diff": 0.5, "logit_range": 50.0, "max_rel_logit_diff": 0.01, "mean_kl": 0.01, "top1_agreement": 0.9, "greedy_match": False, "tokenizer_match": False}

    failures = judge(result, thresholds)

    assert failures == [
        "max |dlogit| 0.5 is 0.01 of the logit range 50 > 0.001", "mean KL 0.01 > 0.0001", "top-1 agreement 0.9000 < 0.99",
        "greedy continuation differs from the PyTorch student", "runtime tokenizer ids differ from the HF tokenizer",
    ]
    assert judge({**result, "max_abs_logit_diff": 0, "max_rel_logit_diff": 0, "mean_kl": 0, "top1_agreement": 1, "greedy_match": True,
                  "tokenizer_match": True}, thresholds) == []


def test_nan_never_passes_the_gate():
    thresholds = ParityThresholds(max_rel_logit=1e-3, max_mean_kl=1e-4, min_top1=0.99, greedy_must_match=True)
    nan = float("nan")
    result = {"max_abs_logit_diff": nan, "logit_range": 10.0, "max_rel_logit_diff": nan, "mean_kl": nan, "top1_agreement": 1.0, "greedy_match": True, "tokenizer_match": True}

    failures = judge(result, thresholds)

    assert failures[0] == "non-finite logits or metrics (NaN/inf) from the artifact"
    assert "max |dlogit| nan is nan of the logit range 10 > 0.001" in failures and "mean KL nan > 0.0001" in failures


def test_every_format_has_thresholds():
    for quantizations in FORMATS.values():
        for quantization in quantizations.values():
            assert 0 < quantization.thresholds.min_top1 <= 1
            assert quantization.thresholds.max_mean_kl > 0


def test_gate_passes_the_right_model_and_rejects_another(tiny_llama_dir, tiny_qwen2_dir, tmp_path):
    student, tokenizer = load_model(tiny_llama_dir), load_tokenizer(tiny_llama_dir)
    export_gguf(tiny_llama_dir, tmp_path / "right.gguf", "f32")
    export_gguf(tiny_qwen2_dir, tmp_path / "wrong.gguf", "f32")  # same tokenizer, other weights
    cfg = VerifyConfig(positions=32, greedy_tokens=8)

    right = check_artifact(student, tokenizer, tmp_path / "right.gguf", "gguf", "f32", cfg)
    wrong = check_artifact(student, tokenizer, tmp_path / "wrong.gguf", "gguf", "f32", cfg)

    assert right["device_ready"] and right["failures"] == [] and right["greedy_match"]
    assert not wrong["device_ready"]
    assert any(f.startswith("max |dlogit|") for f in wrong["failures"])
    assert wrong["thresholds"]["max_rel_logit"] == 1e-4
