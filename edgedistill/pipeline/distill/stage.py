"""Distill stage: train the pruned student on teacher logits (logit KD mixed with CE).

Each optimizer step takes ``batch_size`` packed sequences, runs the frozen teacher and
the student, and minimizes ``alpha * KD + (1 - alpha) * CE`` (KD = the recipe's
divergence at temperature T, times T^2) over every next-token position, through the
fused chunked loss (``fused.py``): logits are formed chunk by chunk from the final hidden
states and lm_head, never for the whole batch. ``losses.py`` states the normalization.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from edgedistill.artifacts import Artifact, record_files
from edgedistill.config import to_dict

OUTPUTS = ("student",)


def _batches(train, batch_size: int, steps: int, seed: int):
    """``steps`` batches of (B, L) ids, reshuffling the training windows every epoch."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator)
    cursor = 0
    for _ in range(steps):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(train), generator=generator), 0
        yield train[order[cursor: cursor + batch_size]]
        cursor += batch_size


def shared_vocab_size(teacher, student, teacher_tokenizer, student_tokenizer) -> int:
    """Logit rows both models share. Equal tokenizers with padded embedding rows -> the
    narrower width (padding rows are never targets); different tokenizers -> UserError."""
    from edgedistill.errors import UserError

    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise UserError("teacher and student tokenizers differ; cross-tokenizer distillation is not supported yet")
    return min(teacher.get_output_embeddings().out_features, student.get_output_embeddings().out_features)


def kd_settings(distill_cfg):
    from edgedistill.pipeline.distill.fused import KDSettings

    return KDSettings(alpha=distill_cfg.alpha, temperature=distill_cfg.temperature, objective=distill_cfg.objective,
                      beta=distill_cfg.beta, skew_alpha=distill_cfg.skew_alpha, scale_by_t2=distill_cfg.scale_by_t2)


def kd_batch_loss(student, teacher, batch, settings, vocab_size: int | None = None):
    """Loss of one (B, L) batch over every next-token position, through the fused path:
    final hidden states times lm_head chunk by chunk, never (B*(L-1), V) logits."""
    import torch

    from edgedistill.pipeline.distill.fused import fused_linear_distillation_loss

    labels = batch[:, 1:].reshape(-1)  # (B*(L-1),)
    with torch.no_grad():
        teacher_hidden = teacher.base_model(batch).last_hidden_state[:, :-1].reshape(labels.numel(), -1)  # (N, Ht)
    student_hidden = student.base_model(batch).last_hidden_state[:, :-1].reshape(labels.numel(), -1)  # (N, Hs)
    student_head, teacher_head = student.get_output_embeddings(), teacher.get_output_embeddings()
    # Under bf16 autocast the transformer bodies run in bf16; the loss always runs in the
    # weights' dtype (fp32 here) so the KL over the vocabulary keeps its precision.
    with torch.autocast(batch.device.type, enabled=False):
        return fused_linear_distillation_loss(
            student_hidden.to(student_head.weight.dtype), student_head.weight[:vocab_size], labels, settings=settings,
            student_bias=None if student_head.bias is None else student_head.bias[:vocab_size],
            teacher_hidden=teacher_hidden.to(teacher_head.weight.dtype), teacher_weight=teacher_head.weight[:vocab_size].detach(),
            teacher_bias=None if teacher_head.bias is None else teacher_head.bias[:vocab_size].detach(),
        )


def learning_rate_at(step: int, distill_cfg) -> float:
    """Linear warmup over ``warmup_steps``, then constant or cosine decay to 10% at ``steps``."""
    import math

    peak = distill_cfg.learning_rate
    if step < distill_cfg.warmup_steps:
        return peak * (step + 1) / distill_cfg.warmup_steps
    if distill_cfg.lr_schedule == "constant":
        return peak
    progress = (step - distill_cfg.warmup_steps) / max(1, distill_cfg.steps - distill_cfg.warmup_steps)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


def use_bf16(precision: str, device_type: str) -> bool:
    """Whether to autocast to bf16: ``auto`` picks it only where bf16 matmuls are native
    (CUDA with bf16 support, or a CPU with AVX512-BF16 or AMX); elsewhere bf16 emulation
    is slower than fp32."""
    import torch

    if precision != "auto":
        return precision == "bf16"
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device_type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def train(student, teacher, train_windows, distill_cfg, seed: int, vocab_size: int | None = None) -> list[dict]:
    """Run the optimizer steps in place; returns one log row per step.

    ``vocab_size``: logit rows compared (see :func:`shared_vocab_size`); all when None.
    ``precision=bf16`` autocasts the forward passes (the loss itself is computed in fp32
    inside the fused path); master weights and AdamW state stay fp32.
    """
    import torch
    from rich.progress import Progress

    optimizer = torch.optim.AdamW(student.parameters(), lr=distill_cfg.learning_rate, weight_decay=distill_cfg.weight_decay)
    settings = kd_settings(distill_cfg)
    device_type = next(student.parameters()).device.type
    bf16 = use_bf16(distill_cfg.precision, device_type)
    student.train()
    log = []
    with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("distill", total=distill_cfg.steps)
        for step, batch in enumerate(_batches(train_windows, distill_cfg.batch_size, distill_cfg.steps, seed)):
            lr = learning_rate_at(step, distill_cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                loss = kd_batch_loss(student, teacher, batch, settings, vocab_size)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if distill_cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(student.parameters(), distill_cfg.grad_clip)
            optimizer.step()
            log.append({"step": step + 1, "loss": loss.item(), "lr": lr})
            progress.update(task, advance=1, description=f"distill loss {loss.item():.3f}")
    student.eval()
    return log


def run(cfg: dict, inp: Artifact, out_dir: Path) -> Artifact:
    """cfg: {"distill": DistillConfig, "data": DataConfig, "seed": int, "recipe_name": str}."""
    import torch

    from edgedistill.hf import count_parameters, load_model, load_tokenizer, save_model_folder
    from edgedistill.pipeline.data import packed_sequences
    from edgedistill.pipeline.evaluate import compare_on_heldout

    torch.manual_seed(cfg["seed"])
    teacher_dir = inp.find("teacher").model_dir
    teacher = load_model(teacher_dir)
    student, tokenizer = load_model(inp.model_dir), load_tokenizer(inp.model_dir)
    vocab_size = shared_vocab_size(teacher, student, load_tokenizer(teacher_dir), tokenizer)
    train_windows, heldout = packed_sequences(cfg["data"], tokenizer, cfg["seed"])
    started = time.perf_counter()
    log = train(student, teacher, train_windows, cfg["distill"], cfg["seed"], vocab_size)
    seconds = time.perf_counter() - started
    tokens = cfg["distill"].steps * cfg["distill"].batch_size * (train_windows.shape[1] - 1)
    metrics = {
        "student_params": count_parameters(student),
        "distill_steps": cfg["distill"].steps,
        "distill_tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        **({"distill_final_loss": log[-1]["loss"]} if log else {}),
        **compare_on_heldout(student, teacher, heldout),
    }

    model_dir = out_dir / "student"
    save_model_folder(student, tokenizer, model_dir)
    (model_dir / "train_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in log), encoding="utf-8")
    (model_dir / "README.md").write_text(model_card(cfg, metrics), encoding="utf-8")
    return Artifact("distill", out_dir, record_files(out_dir, ["student"]), {"model_dir": "student"}, metrics, inp)


def kd_term(distill_cfg) -> str:
    """The KD term in words, e.g. ``T^2 * jsd(beta=0.3)`` at T = 2."""
    params = {"jsd": f"(beta={distill_cfg.beta})", "skew_kl": f"(a={distill_cfg.skew_alpha})",
              "skew_reverse_kl": f"(a={distill_cfg.skew_alpha})"}.get(distill_cfg.objective, "")
    scale = "T^2 * " if distill_cfg.scale_by_t2 else ""
    return f"{scale}{distill_cfg.objective}{params} at T = {distill_cfg.temperature:g}"


def model_card(cfg: dict, metrics: dict) -> str:
    rows = "\n".join(f"| {name} | {value:.6g} |" for name, value in metrics.items())
    recipe = json.dumps({k: to_dict(v) for k, v in cfg.items()}, indent=2)
    return (
        f"# {cfg['recipe_name']} student\n\n"
        f"Distilled by edgedistill: loss = alpha * {kd_term(cfg['distill'])} + (1 - alpha) * CE "
        "(conventions: edgedistill/pipeline/distill/losses.py).\n\n"
        f"## Metrics (held-out split)\n\n| metric | value |\n|---|---|\n{rows}\n\n"
        f"## Stage config\n\n```json\n{recipe}\n```\n"
    )
