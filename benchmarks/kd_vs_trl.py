"""edgedistill's distill loop side by side with TRL's GKDTrainer: same teacher, same student
initialisation, same windows in the same order, same optimizer and steps, one run.

    python -m benchmarks.kd_vs_trl [--steps 40] [--batch-size 8] [--seq-len 256]
        [--learning-rate 1e-3] [--eval-windows 64] [--regimes data on_policy] [--json]

Regimes (the objective is forward KL(p_teacher || p_student) at T = 1 on every target
token, no CE term, on both sides):

* ``data``: lmbda = 0 on both, TRL ``beta = 0`` (its generalized JSD is then forward KL,
  ``F.kl_div(student_logp, teacher_logp)``); edgedistill ``distill.mode=logit``,
  ``objective=forward_kl``, ``alpha=1`` through the fused, chunked KL path.
* ``on_policy``: lmbda = 0.5 on both (a share of steps trains on the student's own
  continuations of the window's first half, sampled at temperature 1), same divergence.

Teacher: the bundled docs-assistant teacher (22.3 M parameters, vocabulary 8192);
student: the docs-assistant student's shape, seeded identically for both sides. Each side
runs in a fresh subprocess: tokens/s over the optimizer steps (first step's start to the
last's end), peak RSS of the process (VmHWM), then held-out perplexity, KL(teacher ||
student) and top-1 agreement on the same held-out windows (``evaluate.compare_on_heldout``).

Differences that stay (documented, not hidden): TRL normalizes each step's loss by
HF Trainer's count of label tokens (L per window; edgedistill counts the L - 1 predicted
positions), and draws its lmbda coin from Python's ``random`` where edgedistill seeds one
per step, so the on-policy steps differ in which, not in how many on average.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # ``python -m benchmarks.X`` runs from the repository root

SIDES = ("edgedistill", "trl")
REGIMES = {"data": 0.0, "on_policy": 0.5}  # regime -> lmbda


def _models_and_data(args):
    """(teacher, student, tokenizer, train Packed, held-out Packed), seeded as every side sees them."""
    from benchmarks.distill_throughput import docs_teacher_and_student
    from edgedistill.config import DataConfig
    from edgedistill.data import packed_examples

    teacher, tokenizer, student = docs_teacher_and_student()
    windows_needed = args.steps * args.batch_size + args.eval_windows * 12
    data = DataConfig(path="builtin:pydocs", seq_len=args.seq_len, max_tokens=windows_needed * args.seq_len)
    train, heldout = packed_examples(data, tokenizer, seed=0)
    return teacher, student, tokenizer, train, heldout[:args.eval_windows]


def _distill_config(args, lmbda: float):
    from edgedistill.config import DistillConfig, OnPolicyConfig

    half = args.seq_len // 2
    return DistillConfig(objective="forward_kl", alpha=1.0, temperature=1.0, scale_by_t2=False, steps=args.steps,
                         batch_size=args.batch_size, learning_rate=args.learning_rate, grad_clip=1.0, precision="fp32",
                         mode="on_policy" if lmbda else "logit", on_policy=OnPolicyConfig(lmbda=lmbda),
                         prompt_tokens=half, response_tokens=args.seq_len - half, sample_temperature=1.0)


def _heldout(student, teacher, heldout) -> dict:
    import torch

    from edgedistill.pipeline.evaluate import compare_on_heldout

    student.eval()
    with torch.no_grad():
        metrics = compare_on_heldout(student.cpu(), teacher.cpu(), heldout.ids)
    return {"heldout_ppl": metrics["student_val_ppl"], "heldout_kl": metrics["student_teacher_val_kl"],
            "heldout_top1_agreement": metrics["student_teacher_val_top1_agreement"],
            "teacher_heldout_ppl": metrics["teacher_val_ppl"]}


def run_edgedistill(args, lmbda: float) -> dict:
    from edgedistill.pipeline.distill.on_policy import OnPolicyTrainer
    from edgedistill.pipeline.distill.trainer import Trainer

    teacher, student, tokenizer, train, heldout = _models_and_data(args)
    cfg = _distill_config(args, lmbda)
    if lmbda:
        trainer = OnPolicyTrainer(student, train, heldout, cfg, seed=0, teacher=teacher,
                                  eos_token_id=tokenizer.eos_token_id)
    else:
        trainer = Trainer(student, train, heldout, cfg, seed=0, teacher=teacher)
    started = time.perf_counter()
    log = [trainer.step(step) for step in range(args.steps)]
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "on_policy_steps": sum(1 for row in log if row.get("on_policy")),
            "train_loss_mean": sum(row["loss"] for row in log) / len(log), **_heldout(trainer.student, teacher, heldout)}


def run_trl(args, lmbda: float) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    from edgedistill.pipeline.distill.trainer import batch_indices

    hf_logging.set_verbosity_error()
    teacher, student, tokenizer, train, heldout = _models_and_data(args)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # the windows edgedistill's trainer reads, in its order: TRL then reads them sequentially
    order = torch.cat([batch_indices(step, len(train), args.batch_size, 0) for step in range(args.steps)])
    dataset = Dataset.from_dict({"input_ids": train.ids[order].tolist()})
    half = args.seq_len // 2

    def collate(rows: list[dict]) -> dict:
        ids = torch.tensor([row["input_ids"] for row in rows])
        ones = torch.ones_like(ids)
        return {"input_ids": ids, "attention_mask": ones, "labels": ids.clone(), "prompts": ids[:, :half],
                "prompt_attention_mask": ones[:, :half]}

    class InOrder(GKDTrainer):
        def _get_train_sampler(self, *_args, **_kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    class StepClock(TrainerCallback):
        first = last = None

        def on_step_begin(self, *_args, **_kwargs):
            if self.first is None:
                self.first = time.perf_counter()

        def on_step_end(self, *_args, **_kwargs):
            self.last = time.perf_counter()

    clock = StepClock()
    with tempfile.TemporaryDirectory() as scratch:
        config = GKDConfig(output_dir=scratch, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                           learning_rate=args.learning_rate, lr_scheduler_type="constant", warmup_steps=0,
                           weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", lmbda=lmbda, beta=0.0,
                           temperature=1.0, max_new_tokens=args.seq_len - half, max_length=args.seq_len, seed=0,
                           save_strategy="no", report_to=[], logging_steps=max(1, args.steps), disable_tqdm=True,
                           use_cpu=not torch.cuda.is_available(), bf16=False, dataloader_num_workers=0)
        trainer = InOrder(model=student, teacher_model=teacher, args=config, train_dataset=dataset,
                          processing_class=tokenizer, data_collator=collate, callbacks=[clock])
        result = trainer.train()
    return {"seconds": clock.last - clock.first, "train_loss_mean": result.training_loss,
            **_heldout(trainer.model, teacher, heldout)}


def measure(side: str, regime: str, args) -> dict:
    command = [sys.executable, "-m", "benchmarks.kd_vs_trl", "--worker", side, "--regimes", regime,
               "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
               "--learning-rate", str(args.learning_rate), "--eval-windows", str(args.eval_windows)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{side} / {regime} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--eval-windows", type=int, default=64)
    parser.add_argument("--regimes", nargs="+", choices=tuple(REGIMES), default=list(REGIMES))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        from edgedistill.benchmarks.machine import peak_memory_bytes

        (regime,) = args.regimes
        run = {"edgedistill": run_edgedistill, "trl": run_trl}[args.worker]
        row = run(args, REGIMES[regime])
        tokens = args.steps * args.batch_size * (args.seq_len - 1)
        row.update(side=args.worker, regime=regime, tokens_per_s=tokens / row["seconds"], peak_rss_bytes=peak_memory_bytes())
        print(json.dumps(row))
        return 0
    from edgedistill.benchmarks.machine import machine_info

    rows = []
    for regime in args.regimes:
        for side in SIDES:
            rows.append(measure(side, regime, args))
            print(f"{side} / {regime}: {rows[-1]['seconds']:.0f}s", file=sys.stderr, flush=True)
    settings = {key: getattr(args, key) for key in ("steps", "batch_size", "seq_len", "learning_rate", "eval_windows")}
    if args.json:
        print(json.dumps({"machine": machine_info(), "settings": settings, "rows": rows}, indent=2))
        return 0
    print(f"settings: {settings}; teacher held-out ppl {rows[0]['teacher_heldout_ppl']:.2f}")
    print("| regime | trainer | tokens/s | peak RSS MiB | held-out ppl | KL(t‖s) nats/token | top-1 agreement |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['regime']} | {row['side']} | {row['tokens_per_s']:,.0f} | {row['peak_rss_bytes'] / 2**20:,.0f} | "
              f"{row['heldout_ppl']:.2f} | {row['heldout_kl']:.4f} | {row['heldout_top1_agreement']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
