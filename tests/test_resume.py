"""A build killed with SIGKILL during distillation resumes from its last checkpoint, and
`edgedistill cache-teacher` feeds a build that never loads the teacher."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgedistill.artifacts import read_manifest

SETTINGS = ["distill.steps=600", "checkpoint.every=20", "bench.enabled=false", "export.onnx=[]"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgedistill.cli", *args]


def _build_command(out: Path, *extra: str) -> list[str]:
    return _cli("build", "tiny", "--out", str(out), *[arg for setting in (*SETTINGS, *extra) for arg in ("--set", setting)])


def _wait_for_checkpoint(out: Path, process: subprocess.Popen, min_step: int, timeout: float = 300.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(p.name.split("-")[1]) for p in out.glob(".state/distill-*/step-*")]
        if steps and max(steps) >= min_step:
            return max(steps)
        assert process.poll() is None, "the build finished before a checkpoint was seen"
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared in time")


@pytest.mark.slow
def test_kill_9_during_distillation_then_the_same_command_resumes(tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(_build_command(straight), check=True, capture_output=True, text=True)
    expected = read_manifest(straight)["stages"]["distill"]["artifact"]["metrics"]["distill_final_loss"]

    out = tmp_path / "killed"
    process = subprocess.Popen(_build_command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen = _wait_for_checkpoint(out, process, min_step=40)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert "distill" not in read_manifest(out)["stages"] and not (out / "student").exists()

    rerun = subprocess.run(_build_command(out), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "distill: resuming from the checkpoint at step" in rerun.stderr
    metrics = read_manifest(out)["stages"]["distill"]["artifact"]["metrics"]
    assert metrics["distill_resumed_from_step"] >= seen
    assert metrics["distill_final_loss"] == pytest.approx(expected, rel=1e-4)
    log = [json.loads(line) for line in (out / "student" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 601))
    assert (out / "student" / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "gguf" / "student-f16.gguf").is_file()
    assert not list(out.glob(".state/distill-*"))  # checkpoints are dropped once the stage is recorded


@pytest.mark.slow
def test_cache_teacher_then_build_trains_without_loading_the_teacher(tmp_path):
    out = tmp_path / "out"
    settings = ["distill.steps=20", "bench.enabled=false", "export.onnx=[]", "data.max_tokens=20000"]
    cached = subprocess.run(_cli("cache-teacher", "tiny", "--out", str(out), "--topk", "32",
                                 *[a for s in settings for a in ("--set", s)]), capture_output=True, text=True)
    assert cached.returncode == 0, cached.stderr
    assert "k=32" in cached.stdout and "bytes/token" in cached.stdout and "distill.teacher_topk=32" in cached.stdout
    meta = json.loads((out / "teacher-cache" / "meta.json").read_text())

    # the build's distill stage must find that cache; loading the teacher there fails the run
    # during the distill stage, any model load other than the student's input is the teacher
    probe = (
        "import sys\n"
        "from edgedistill import hf\n"
        "import edgedistill.pipeline.distill as distill\n"
        "original_load, original_run = hf.load_model, distill.run\n"
        "def guarded_run(cfg, inp, out_dir, **kwargs):\n"
        "    def load(path, *a, **k):\n"
        "        if str(path) != str(inp.model_dir):\n"
        "            raise SystemExit(f'distill loaded a model other than the student: {path}')\n"
        "        return original_load(path, *a, **k)\n"
        "    hf.load_model = load\n"
        "    try:\n"
        "        return original_run(cfg, inp, out_dir, **kwargs)\n"
        "    finally:\n"
        "        hf.load_model = original_load\n"
        "distill.run = guarded_run\n"
        "from edgedistill.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    built = subprocess.run([sys.executable, "-c", probe, "build", "tiny", "--out", str(out),
                            *[a for s in [*settings, "distill.teacher_topk=32"] for a in ("--set", s)]],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    metrics = read_manifest(out)["stages"]["distill"]["artifact"]["metrics"]
    assert metrics["teacher_cache_bytes_per_token"] == pytest.approx(meta["bytes_per_token"])
    assert 0 < metrics["student_teacher_val_top1_agreement"] <= 1
    assert json.loads((out / "teacher-cache" / "meta.json").read_text())["fingerprint"] == meta["fingerprint"]  # not rebuilt


@pytest.mark.slow
def test_a_build_under_a_two_process_launch_matches_a_one_process_build(tmp_path):
    import socket

    settings = ["distill.steps=6", "bench.enabled=false", "export.onnx=[]", "data.max_tokens=20000"]
    single = tmp_path / "single"
    subprocess.run(_cli("build", "tiny", "--out", str(single), *[a for s in settings for a in ("--set", s)]),
                   check=True, capture_output=True, text=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "ddp"
    # what `accelerate launch --multi_gpu -m edgedistill.cli build ...` does on GPUs (torchrun); gloo on this CPU
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         "-m", "edgedistill.cli", "build", "tiny", "--out", str(out), *[a for s in settings for a in ("--set", s)]],
        capture_output=True, text=True, timeout=600, env=env)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("distill  ran") == 1  # one process reports
    assert launched.stdout.count("manifest: ") == 1
    manifest = read_manifest(out)
    assert manifest["status"] == "complete"
    assert manifest["stages"]["distill"]["artifact"]["metrics"]["distill_processes"] == 2
    ddp_loss = manifest["stages"]["distill"]["artifact"]["metrics"]["distill_final_loss"]
    assert ddp_loss == pytest.approx(read_manifest(single)["stages"]["distill"]["artifact"]["metrics"]["distill_final_loss"],
                                     rel=1e-4)
    assert not list(out.glob(".tmp-*"))
