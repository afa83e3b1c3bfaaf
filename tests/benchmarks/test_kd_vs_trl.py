"""The peer benchmark runs both trainers for real (TRL's GKDTrainer, edgedistill's Trainer)
and, on the same windows in the same order from the same initialisation, lands on the same
student: forward KL at T = 1 is the same objective on both sides."""

import json

import pytest

from benchmarks import kd_vs_trl


@pytest.mark.slow
def test_logit_kd_and_trl_gkd_at_lmbda_0_beta_0_train_the_same_student(capsys):
    assert kd_vs_trl.main(["--steps", "3", "--batch-size", "2", "--seq-len", "64", "--eval-windows", "4",
                           "--regimes", "data", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ours, theirs = report["rows"]
    assert (ours["side"], theirs["side"]) == ("edgedistill", "trl")
    assert ours["tokens_per_s"] > 0 and theirs["tokens_per_s"] > 0 and ours["peak_rss_bytes"] > 0
    assert ours["heldout_kl"] < 5.0  # it trained: the untrained student is at 5.07 nats/token
    assert ours["heldout_kl"] == pytest.approx(theirs["heldout_kl"], rel=2e-3)
    assert ours["heldout_ppl"] == pytest.approx(theirs["heldout_ppl"], rel=5e-3)
    assert report["machine"]["cpu_count"] >= 1
