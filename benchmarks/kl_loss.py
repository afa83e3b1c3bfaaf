"""KD loss benchmark: naive (materialized logits) vs edgedistill's fused chunked path vs
Liger-Kernel's chunked JSD loss, forward + backward.

    python -m benchmarks.kl_loss [--vocab V --tokens N --hidden H]
        [--device cpu|cuda] [--dtype fp32|bf16] [--json]

Each (implementation, shape) runs in a fresh subprocess. On CPU, torch's allocations are
invisible to tracemalloc, so memory is the process's peak RSS during the timed steps
minus its RSS once the inputs exist; on CUDA it is max_memory_allocated minus the
allocation once the inputs exist. The inputs are the same for every implementation.
Times are the median of ``--repeats`` steps after one warm-up step (synchronized on
CUDA). All impls compute forward KL at T=1 mixed 50/50 with CE (Liger: JSD with beta=0,
which is forward KL). On CUDA ours runs the Triton kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # ``python -m benchmarks.X`` runs from the repository root

IMPLS = ("naive", "edgedistill", "liger")
ALPHA, TEMPERATURE = 0.5, 1.0


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as handle:
        handle.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


DTYPES = ("fp32", "bf16")


def make_inputs(tokens: int, vocab: int, hidden: int, device: str = "cpu", dtype: str = "fp32", seed: int = 0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]

    def tensor(*shape, scale=1.0, grad=False):
        value = (torch.randn(*shape, generator=generator) * scale).to(device=device, dtype=torch_dtype)
        return value.requires_grad_(grad)

    return {
        "student_hidden": tensor(tokens, hidden, grad=True),
        "student_weight": tensor(vocab, hidden, scale=hidden**-0.5, grad=True),
        "teacher_hidden": tensor(tokens, hidden),
        "teacher_weight": tensor(vocab, hidden, scale=hidden**-0.5),
        "labels": torch.randint(0, vocab, (tokens,), generator=generator).to(device),
    }


def naive_step(inputs):
    """The plain reference on materialized (N, V) logits: what the fused path replaces."""
    from edgedistill.pipeline.distill.losses import distillation_loss

    student_logits = inputs["student_hidden"] @ inputs["student_weight"].T  # (N, V)
    teacher_logits = inputs["teacher_hidden"] @ inputs["teacher_weight"].T
    loss, _ = distillation_loss(student_logits, teacher_logits, inputs["labels"], alpha=ALPHA, temperature=TEMPERATURE)
    loss.backward()
    return loss.detach()


def edgedistill_step(inputs):
    from edgedistill.pipeline.distill.fused import KDSettings, fused_linear_distillation_loss

    loss = fused_linear_distillation_loss(
        inputs["student_hidden"], inputs["student_weight"], inputs["labels"],
        teacher_hidden=inputs["teacher_hidden"], teacher_weight=inputs["teacher_weight"],
        settings=KDSettings(alpha=ALPHA, temperature=TEMPERATURE),
    )
    loss.backward()
    return loss.detach()


def liger_step(inputs):
    from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

    loss_fn = LigerFusedLinearJSDLoss(weight_hard_loss=1 - ALPHA, weight_soft_loss=ALPHA, beta=0.0,
                                      temperature=TEMPERATURE, compiled=inputs["labels"].is_cuda)  # torch.compile on GPU only
    loss = loss_fn(inputs["student_hidden"], inputs["student_weight"], inputs["teacher_hidden"],
                   inputs["teacher_weight"], inputs["labels"])
    loss.backward()
    return loss.detach()


# impl -> one forward + backward step over the inputs, returning the (detached) loss
STEPS = {"naive": naive_step, "edgedistill": edgedistill_step, "liger": liger_step}


class _Memory:
    """Peak bytes above a baseline: RSS on CPU, the caching allocator on CUDA."""

    def __init__(self, device: str):
        import torch

        self.cuda = device == "cuda"
        self.torch = torch

    def start(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.baseline = self.torch.cuda.memory_allocated()
            self.torch.cuda.reset_peak_memory_stats()
        else:
            self.baseline = _rss_bytes("VmRSS:")
            _reset_peak_rss()

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def peak(self) -> int:
        peak = self.torch.cuda.max_memory_allocated() if self.cuda else _rss_bytes("VmHWM:")
        return max(0, peak - self.baseline)


def _clear_grads(inputs) -> None:
    for name in ("student_hidden", "student_weight"):
        inputs[name].grad = None


def measure_in_this_process(impl: str, tokens: int, vocab: int, hidden: int, repeats: int,
                            device: str = "cpu", dtype: str = "fp32") -> dict:
    inputs = make_inputs(tokens, vocab, hidden, device, dtype)
    step, memory = STEPS[impl], _Memory(device)
    step(inputs)  # warm-up
    _clear_grads(inputs)  # the baseline holds the inputs only; gradients count as the step's memory
    memory.start()
    times = []
    for _ in range(repeats):
        _clear_grads(inputs)
        started = time.perf_counter()
        step(inputs)
        memory.sync()
        times.append(time.perf_counter() - started)
    return {"impl": impl, "vocab": vocab, "tokens": tokens, "hidden": hidden, "device": device, "dtype": dtype,
            "peak_bytes": memory.peak(), "median_s": statistics.median(times)}


def measure(impl: str, tokens: int, vocab: int, hidden: int, repeats: int, device: str = "cpu", dtype: str = "fp32") -> dict:
    """Run one measurement in a fresh interpreter and return its row."""
    command = [sys.executable, "-m", "benchmarks.kl_loss", "--worker", impl, "--tokens", str(tokens),
               "--vocab", str(vocab), "--hidden", str(hidden), "--repeats", str(repeats), "--device", device,
               "--dtype", dtype]
    # glibc keeps freed blocks below its adaptive mmap threshold (up to 32 MiB) in the heap,
    # which would hide a chunked implementation's buffers from RSS: pin the threshold low.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MALLOC_MMAP_THRESHOLD_": "131072"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024])
    parser.add_argument("--hidden", type=int, nargs="+", default=[896])
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure_in_this_process(args.worker, args.tokens[0], args.vocab[0], args.hidden[0], args.repeats,
                                                 args.device, args.dtype)))
        return 0
    from edgedistill.benchmarks.machine import machine_info

    rows = [measure(impl, tokens, vocab, hidden, args.repeats, args.device, args.dtype)
            for vocab in args.vocab for tokens in args.tokens for hidden in args.hidden for impl in args.impls]
    if args.json:
        print(json.dumps({"machine": machine_info(), "rows": rows}))
        return 0
    print(f"{'impl':<12}{'vocab':>8}{'tokens':>8}{'hidden':>8}{'peak MiB':>11}{'median s':>10}{'mem vs naive':>14}{'time vs naive':>15}")
    naive = {(r["vocab"], r["tokens"], r["hidden"]): r for r in rows if r["impl"] == "naive"}
    for row in rows:
        base = naive.get((row["vocab"], row["tokens"], row["hidden"]))
        mem = f"{row['peak_bytes'] / base['peak_bytes']:.1%}" if base and base["peak_bytes"] else "-"
        speed = f"{row['median_s'] / base['median_s']:.2f}x" if base else "-"
        print(f"{row['impl']:<12}{row['vocab']:>8}{row['tokens']:>8}{row['hidden']:>8}"
              f"{row['peak_bytes'] / 2**20:>11.0f}{row['median_s']:>10.3f}{mem:>14}{speed:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
