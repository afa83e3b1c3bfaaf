"""Distillation training throughput: naive loss (materialized (N, V) logits) vs the fused
chunked path, same teacher, same student, same batches, one run.

    python -m benchmarks.distill_throughput [--steps 12] [--warmup 2]
        [--batch-size 8] [--seq-len 512] [--precision fp32|bf16|auto] [--json]

The teacher is the bundled docs-assistant teacher (22.3 M params, vocab 8192); the student
has the docs-assistant student's shape (hidden 256, 4 layers, MLP 768, 4 query / 1 KV
heads of 64), seeded identically for both implementations. Each implementation runs in a
fresh subprocess through the real :class:`Trainer` (AdamW, grad clipping, the recipe's
precision); tokens/s is measured over ``--steps`` optimizer steps after ``--warmup``
untimed ones, and peak RSS (CPU) or peak CUDA allocation is recorded per process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # ``python -m benchmarks.X`` runs from the repository root

IMPLS = ("naive", "fused")


def docs_teacher_and_student():
    """(teacher, tokenizer, student): the bundled docs-assistant teacher and a fresh student of
    the docs-assistant student's shape, seeded (0) so every run starts from the same weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from edgedistill.hf import load_model, load_tokenizer
    from edgedistill.pipeline.teacher import BUILTIN_FOLDERS

    teacher_dir = BUILTIN_FOLDERS["pydocs-teacher"]
    teacher, tokenizer = load_model(teacher_dir), load_tokenizer(teacher_dir)
    config = AutoConfig.from_pretrained(teacher_dir)
    config.update({"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
                   "num_key_value_heads": 1, "head_dim": 64})
    torch.manual_seed(0)
    student = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)  # the teacher config says fp16
    return teacher, tokenizer, student


def measure_in_this_process(impl: str, steps: int, warmup: int, batch_size: int, seq_len: int, precision: str) -> dict:
    import torch

    from edgedistill.benchmarks.machine import peak_memory_bytes
    from edgedistill.config import DataConfig, DistillConfig
    from edgedistill.data import packed_examples
    from edgedistill.pipeline.distill.trainer import Trainer

    teacher, tokenizer, student = docs_teacher_and_student()
    data = DataConfig(path="builtin:pydocs", seq_len=seq_len, max_tokens=(steps + warmup + 2) * batch_size * seq_len * 2)
    train, heldout = packed_examples(data, tokenizer, seed=0)
    cfg = DistillConfig(steps=steps + warmup, batch_size=batch_size, learning_rate=1e-3, alpha=0.8, temperature=1.0,
                        grad_clip=1.0, precision=precision)
    trainer = Trainer(student, train, heldout, cfg, seed=0, teacher=teacher, loss_impl=impl)
    for step in range(warmup):
        trainer.step(step)
    device = trainer.acc.device.type
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    losses = [trainer.step(step)["loss"] for step in range(warmup, warmup + steps)]
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens = steps * batch_size * (seq_len - 1)
    return {"impl": impl, "device": device, "precision": precision, "bf16": trainer.bf16, "steps": steps,
            "batch_size": batch_size, "seq_len": seq_len, "vocab": student.config.vocab_size, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "peak_memory_bytes": peak_memory_bytes(device), "final_loss": losses[-1]}


def measure(impl: str, args) -> dict:
    command = [sys.executable, "-m", "benchmarks.distill_throughput", "--worker", impl,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
               "--seq-len", str(args.seq_len), "--precision", args.precision]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure_in_this_process(args.worker, args.steps, args.warmup, args.batch_size, args.seq_len,
                                                 args.precision)))
        return 0
    from edgedistill.benchmarks.machine import machine_info

    rows = [measure(impl, args) for impl in IMPLS]
    if args.json:
        print(json.dumps({"machine": machine_info(), "rows": rows}))
        return 0
    naive = rows[0]
    print(f"{'impl':<8}{'device':>7}{'bf16':>6}{'tokens/s':>11}{'vs naive':>10}{'peak MiB':>10}{'final loss':>12}")
    for row in rows:
        print(f"{row['impl']:<8}{row['device']:>7}{str(row['bf16']):>6}{row['tokens_per_s']:>11,.0f}"
              f"{row['tokens_per_s'] / naive['tokens_per_s']:>9.2f}x{row['peak_memory_bytes'] / 2**20:>10.0f}"
              f"{row['final_loss']:>12.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
