import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.kl_loss import IMPLS, STEPS, make_inputs

REPO = Path(__file__).resolve().parents[2]  # the benchmark scripts run from the repository root


@pytest.mark.parametrize("impl", IMPLS)
def test_every_implementation_computes_the_same_loss_and_gradients(impl):
    inputs = make_inputs(tokens=64, vocab=300, hidden=16)
    reference = make_inputs(tokens=64, vocab=300, hidden=16)
    expected = STEPS["naive"](reference)

    loss = STEPS[impl](inputs)

    assert loss.allclose(expected, rtol=1e-5)
    for name in ("student_hidden", "student_weight"):
        assert inputs[name].grad is not None
        assert inputs[name].grad.allclose(reference[name].grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.slow
def test_the_benchmark_prints_the_documented_json():
    command = [sys.executable, "-m", "benchmarks.kl_loss", "--vocab", "2000", "--tokens", "128",
               "--hidden", "32", "--repeats", "1", "--json"]

    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {row["impl"] for row in report["rows"]} == set(IMPLS)
    for row in report["rows"]:
        assert {"impl", "vocab", "tokens", "hidden", "peak_bytes", "median_s"} <= row.keys()
        assert row["median_s"] > 0 and row["peak_bytes"] >= 0
        assert (row["vocab"], row["tokens"], row["hidden"]) == (2000, 128, 32)
    assert report["machine"]["cpu_count"] >= 1
