"""Distill stage: train the student (pruned, or independent) on the teacher's signal.

The loop lives in ``trainer.py`` (Accelerate, accumulation, checkpoints, evaluation);
this module wires it to the build: data, the teacher signal (``teacher_signals.py``:
online local teacher, offline top-k cache, API scores, sequence responses, cross-tokenizer
alignment; each prepared once, the main process first where it writes a shared file),
and the student folder with its training log, loss curve and model card.
"""

from __future__ import annotations

import json
import time

from edgedistill.artifacts import Artifact, record_files
from edgedistill.config import to_dict
from edgedistill.pipeline.distill.teacher_signals import (
    CACHE_FOLDER, RESPONSES_FOLDER, SCORES_FOLDER, TEACHER_SIGNALS, SignalInputs, pick_signal, teacher_vocab_rows,
)
from edgedistill.stage_context import StageContext

OUTPUTS = ("student",)
RESUMABLE = True  # keeps checkpoints in the state folder the orchestrator passes
SHARED_FOLDERS = (CACHE_FOLDER, SCORES_FOLDER, RESPONSES_FOLDER)  # written by the teacher signals


def shared_vocab_size(teacher_rows: int, student_rows: int, teacher_tokenizer, student_tokenizer) -> int | None:
    """Logit rows both models share. Equal tokenizers with padded embedding rows -> the
    narrower width (padding rows are never targets); different tokenizers -> None (the
    cross-tokenizer signal compares by text; preflight refused every other objective)."""
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        return None
    return min(teacher_rows, student_rows)


def train(student, teacher, windows, distill_cfg, seed: int, vocab_size: int | None = None) -> list[dict]:
    """Distill ``student`` from ``teacher`` on (N, L) token ``windows`` (every token a target)
    in place, in this process; returns one log row per step. The build stage uses
    :class:`Trainer` directly (checkpoints, cache, held-out split)."""
    import torch

    from edgedistill.data import Packed
    from edgedistill.pipeline.distill.trainer import Trainer

    packed = Packed(windows, torch.ones_like(windows, dtype=torch.bool))
    return Trainer(student, packed, packed[:1], distill_cfg, seed=seed, teacher=teacher, vocab_size=vocab_size).fit().log


def _mode_trainer(distill_cfg, tokenizer) -> tuple[type, dict]:
    """The trainer of ``distill.mode`` and its mode-specific arguments."""
    from edgedistill.pipeline.distill.trainer import Trainer

    if distill_cfg.mode == "on_policy":
        from edgedistill.pipeline.distill.on_policy import OnPolicyTrainer

        return OnPolicyTrainer, {"eos_token_id": tokenizer.eos_token_id}
    return Trainer, {}


def run(cfg: dict, inp: Artifact, ctx: StageContext) -> Artifact:
    """cfg: {"distill": DistillConfig, "data": DataConfig, "seed": int, "recipe_name": str,
    "teacher_api": TeacherApiConfig | None}; ``ctx.extras["checkpoint"]``: CheckpointConfig
    (not in the stage key).

    ``ctx.state_dir`` keeps checkpoints and the live training log between runs of the same
    stage key (a killed build resumes there); the build folder holds the teacher cache,
    responses and scores (``SHARED_FOLDERS``, written by ``TEACHER_SIGNALS``).
    """
    out_dir, state_dir = ctx.out_dir, ctx.state_dir
    from edgedistill.hf import count_parameters, load_model, load_tokenizer, save_model_folder
    from edgedistill.data import packed_examples
    from edgedistill.pipeline.distill.trainer import plot_loss_curve
    from edgedistill.processes import main_process_first
    from edgedistill.runtime.chat import CHAT_TEMPLATES

    import torch

    distill_cfg, seed = cfg["distill"], cfg["seed"]
    torch.manual_seed(seed)
    teacher_artifact = inp.find("teacher")
    student, tokenizer = load_model(inp.model_dir), load_tokenizer(inp.model_dir)
    student_rows = student.get_output_embeddings().out_features
    vocab_size = _vocab_of_signal(teacher_artifact, student_rows, tokenizer)
    train_windows, heldout = packed_examples(cfg["data"], tokenizer, seed)
    answer_metrics = {}
    if distill_cfg.answers.questions:  # the teacher's chat answers join the windows (a shared file: main process first)
        from edgedistill.pipeline.distill.chat_answers import with_teacher_answers

        with main_process_first():
            train_windows, answer_metrics = with_teacher_answers(cfg, teacher_artifact, tokenizer, train_windows,
                                                                 ctx.build_dir)
    inputs = SignalInputs(cfg, teacher_artifact, tokenizer, train_windows, heldout, vocab_size, ctx.build_dir)
    signal_name = pick_signal(inputs)
    chosen = TEACHER_SIGNALS[signal_name]
    if chosen.writes_shared_files:  # under a multi-process launch the main process writes, the others then read
        with main_process_first():
            signal = chosen.prepare(inputs)
    else:
        signal = chosen.prepare(inputs)
    if distill_cfg.lora_rank:
        student = with_lora(student, distill_cfg.lora_rank)
    trainer_class, extra = _mode_trainer(distill_cfg, tokenizer)
    trainer_class = signal.trainer_class or trainer_class
    checkpoint = ctx.extras.get("checkpoint")
    trainer = trainer_class(student, signal.train, signal.heldout, distill_cfg, seed=seed, teacher=signal.teacher,
                            cache=signal.cache, vocab_size=vocab_size or student_rows,
                            state_dir=state_dir, log_path=state_dir / "train_log.jsonl",
                            checkpoint_every=checkpoint.every if checkpoint else 0,
                            keep_checkpoints=checkpoint.keep if checkpoint else 2, **extra, **signal.trainer_kwargs)
    started = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - started
    steps_run = len(result.log) - result.resumed_from
    tokens = steps_run * distill_cfg.batch_size * (signal.train.ids.shape[1] - 1)
    if signal.final_quality is not None:
        quality = signal.final_quality(trainer)
    else:
        quality = trainer.heldout_metrics(autocast=False)  # every held-out window, in fp32
    mode_metrics = dict(signal.metrics)
    if distill_cfg.mode == "on_policy":
        from edgedistill.pipeline.distill.on_policy import on_policy_metrics

        mode_metrics.update(on_policy_metrics(result.log))
    student = trainer.student.cpu()
    if distill_cfg.lora_rank:  # the adapters folded into the weights: a plain model of the same shape ships
        student = student.merge_and_unload()
    metrics = {
        "student_params": count_parameters(student),
        "distill_steps": len(result.log),
        "distill_tokens_per_s": tokens / seconds if seconds > 0 and steps_run else 0.0,
        "distill_resumed_from_step": result.resumed_from,
        "distill_processes": trainer.acc.num_processes,
        "distill_stopped_early": int(result.stopped_early),
        **({"distill_final_loss": result.log[-1]["loss"]} if result.log else {}),
        **quality,
        **mode_metrics,
        **answer_metrics,
    }
    if signal.cache is not None:
        metrics["teacher_cache_bytes_per_token"] = signal.cache.bytes_per_token
        metrics["teacher_cache_tail_mass"] = signal.cache.mean_tail_mass()

    model_dir = out_dir / "student"
    if cfg["data"].chat_template:  # the student answers in the format it was trained on: ship that template
        tokenizer.chat_template = CHAT_TEMPLATES.get(cfg["data"].chat_template, cfg["data"].chat_template)
    save_model_folder(student, tokenizer, model_dir)
    (model_dir / "train_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in result.log), encoding="utf-8")
    if result.log:
        plot_loss_curve(result.log, model_dir / "loss_curve.png",
                        f"{cfg['recipe_name']}: {distill_cfg.alpha:g} x {kd_term(distill_cfg)} + {1 - distill_cfg.alpha:g} x CE")
    (model_dir / "README.md").write_text(model_card(cfg, metrics), encoding="utf-8")
    payload = {"model_dir": "student", "teacher_signal": signal_name}
    return Artifact("distill", out_dir, record_files(out_dir, ["student"]), payload, metrics, inp)


LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def with_lora(student, rank: int):
    """``student`` with LoRA adapters (peft) on its attention and MLP projections, only they
    trainable (lora_alpha = 2 x rank, no dropout: the short schedules here do not overfit)."""
    from peft import LoraConfig, get_peft_model

    present = sorted({name.rsplit(".", 1)[-1] for name, _ in student.named_modules()} & set(LORA_MODULES))
    if not present:
        from edgedistill.errors import UserError

        raise UserError(f"distill.lora_rank: the student has none of the projections LoRA adapts ({', '.join(LORA_MODULES)}); "
                        "set distill.lora_rank=0")
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=present, bias="none")
    return get_peft_model(student, config)


def _vocab_of_signal(teacher_artifact: Artifact, student_rows: int, tokenizer) -> int | None:
    """The logit rows teacher and student share (:func:`shared_vocab_size`); a teacher known only
    through an API has its tokens mapped onto the student's by text, so all of the student's."""
    from edgedistill.hf import load_tokenizer

    if is_api_teacher(teacher_artifact):
        return student_rows
    return shared_vocab_size(teacher_vocab_rows(teacher_artifact.model_dir), student_rows,
                             load_tokenizer(teacher_artifact.model_dir), tokenizer)


def is_api_teacher(teacher_artifact: Artifact) -> bool:
    """Whether the teacher stage recorded only an API (``teacher: api``): no weights here."""
    return "api" in teacher_artifact.payload


def kd_term(distill_cfg) -> str:
    """The KD term in words, e.g. ``T^2 * jsd(beta=0.3)`` at T = 2."""
    params = {"jsd": f"(beta={distill_cfg.beta})", "skew_kl": f"(a={distill_cfg.skew_alpha})",
              "skew_reverse_kl": f"(a={distill_cfg.skew_alpha})"}.get(distill_cfg.objective, "")
    scale = "T^2 * " if distill_cfg.scale_by_t2 else ""
    where = {"logit": "", "sequence": " on teacher responses (sparse top-k)",
             "on_policy": f" on student samples for lmbda = {distill_cfg.on_policy.lmbda:g} of steps"}[distill_cfg.mode]
    return f"{scale}{distill_cfg.objective}{params} at T = {distill_cfg.temperature:g}{where}"


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
