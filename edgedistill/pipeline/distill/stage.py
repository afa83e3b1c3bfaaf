"""Distill stage: train the pruned student on teacher logits (logit KD mixed with CE).

The loop lives in ``trainer.py`` (Accelerate, accumulation, checkpoints, evaluation);
this module wires it to the build: data, the online teacher or its top-k cache, the
student folder with its training log, loss curve and model card.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from edgedistill.artifacts import Artifact, record_files
from edgedistill.config import to_dict
from edgedistill.processes import current

OUTPUTS = ("student",)
RESUMABLE = True  # keeps checkpoints in the state folder the orchestrator passes


def shared_vocab_size(teacher_rows: int, student_rows: int, teacher_tokenizer, student_tokenizer) -> int:
    """Logit rows both models share. Equal tokenizers with padded embedding rows -> the
    narrower width (padding rows are never targets); different tokenizers -> UserError."""
    from edgedistill.errors import UserError

    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise UserError("teacher and student tokenizers differ; cross-tokenizer distillation is not supported yet")
    return min(teacher_rows, student_rows)


def train(student, teacher, windows, distill_cfg, seed: int, vocab_size: int | None = None) -> list[dict]:
    """Distill ``student`` from ``teacher`` on (N, L) token ``windows`` (every token a target)
    in place, in this process; returns one log row per step. The build stage uses
    :class:`Trainer` directly (checkpoints, cache, held-out split)."""
    import torch

    from edgedistill.pipeline.data import Packed
    from edgedistill.pipeline.distill.trainer import Trainer

    packed = Packed(windows, torch.ones_like(windows, dtype=torch.bool))
    return Trainer(student, packed, packed[:1], distill_cfg, seed=seed, teacher=teacher, vocab_size=vocab_size).fit().log


def run(cfg: dict, inp: Artifact, out_dir: Path, state_dir: Path | None = None, build_dir: Path | None = None) -> Artifact:
    """cfg: {"distill": DistillConfig, "data": DataConfig, "seed": int, "recipe_name": str,
    "checkpoint": CheckpointConfig (not in the stage key)}.

    ``state_dir`` keeps checkpoints and the live training log between runs of the same
    stage key (a killed build resumes there); ``build_dir`` holds the teacher cache.
    """
    from edgedistill.hf import count_parameters, load_model, load_tokenizer, save_model_folder
    from edgedistill.pipeline.data import packed_examples
    from edgedistill.pipeline.distill.trainer import Trainer, plot_loss_curve
    from edgedistill.runtime.chat import CHAT_TEMPLATES

    import torch

    distill_cfg, seed = cfg["distill"], cfg["seed"]
    torch.manual_seed(seed)
    teacher_artifact = inp.find("teacher")
    student, tokenizer = load_model(inp.model_dir), load_tokenizer(inp.model_dir)
    vocab_size = shared_vocab_size(teacher_vocab_rows(teacher_artifact.model_dir), student.get_output_embeddings().out_features,
                                   load_tokenizer(teacher_artifact.model_dir), tokenizer)
    train_windows, heldout = packed_examples(cfg["data"], tokenizer, seed)
    data_heldout, mode_metrics = heldout, {}
    teacher, cache = None, None
    if distill_cfg.mode == "sequence":
        from edgedistill.pipeline.distill.sequence import sequence_windows

        procs = current()  # the main process has the teacher answer; the others then read its file
        if not procs.main:
            procs.barrier()
        train_windows, heldout, cache, mode_metrics = sequence_windows(cfg, teacher_artifact, tokenizer, train_windows,
                                                                       build_dir or out_dir)
        if procs.main:
            procs.barrier()
    elif distill_cfg.teacher_api:  # logit or on_policy KD from the API's top-k over the windows
        from edgedistill.pipeline.distill.api_teacher import scored_windows

        procs = current()
        if not procs.main:
            procs.barrier()
        cache = scored_windows(distill_cfg, torch.cat([train_windows.ids, heldout.ids]), tokenizer, build_dir or out_dir)
        mode_metrics = {"teacher_topk_aligned_share": cache.aligned_share}
        if procs.main:
            procs.barrier()
    elif distill_cfg.teacher_topk:
        procs = current()  # under a multi-process launch the main process builds the cache, the others then open it
        if not procs.main:
            procs.barrier()
        cache = ensure_teacher_cache(teacher_artifact, train_windows, heldout, distill_cfg, vocab_size,
                                     (build_dir or out_dir) / CACHE_FOLDER)
        if procs.main:
            procs.barrier()
    else:
        teacher = load_model(teacher_artifact.model_dir)
    checkpoint = cfg.get("checkpoint")
    log_path = (state_dir or out_dir) / "train_log.jsonl"
    trainer_class, extra = Trainer, {}
    if distill_cfg.mode == "on_policy":
        from edgedistill.pipeline.distill.on_policy import OnPolicyTrainer

        trainer_class, extra = OnPolicyTrainer, {"eos_token_id": tokenizer.eos_token_id}
        if distill_cfg.teacher_api:
            from edgedistill.pipeline.distill.sequence_data import TokenMap

            extra["token_map"] = TokenMap(tokenizer)
    trainer = trainer_class(student, train_windows, heldout, distill_cfg, seed=seed, teacher=teacher, cache=cache,
                            vocab_size=vocab_size, state_dir=state_dir, log_path=log_path,
                            checkpoint_every=checkpoint.every if checkpoint and state_dir else 0,
                            keep_checkpoints=checkpoint.keep if checkpoint else 2, **extra)
    started = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - started
    steps_run = len(result.log) - result.resumed_from
    tokens = steps_run * distill_cfg.batch_size * (train_windows.ids.shape[1] - 1)
    quality = trainer.heldout_metrics(autocast=False)  # every held-out window, in fp32
    if distill_cfg.mode == "sequence":
        quality = {f"sequence_{name}": value for name, value in quality.items()}  # on held-out teacher responses
        if not distill_cfg.teacher_api:  # comparable with the other modes: the data's held-out windows, full teacher
            quality.update(heldout_against_teacher(trainer.student, teacher_artifact, data_heldout, vocab_size))
    if distill_cfg.mode == "on_policy":
        from edgedistill.pipeline.distill.on_policy import on_policy_metrics

        mode_metrics.update(on_policy_metrics(result.log))
    student = trainer.student.cpu()
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
    }
    if cache is not None:
        metrics["teacher_cache_bytes_per_token"] = cache.bytes_per_token
        metrics["teacher_cache_tail_mass"] = cache.mean_tail_mass()

    model_dir = out_dir / "student"
    if cfg["data"].chat_template:  # the student answers in the format it was trained on: ship that template
        tokenizer.chat_template = CHAT_TEMPLATES.get(cfg["data"].chat_template, cfg["data"].chat_template)
    save_model_folder(student, tokenizer, model_dir)
    (model_dir / "train_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in result.log), encoding="utf-8")
    if result.log:
        plot_loss_curve(result.log, model_dir / "loss_curve.png",
                        f"{cfg['recipe_name']}: {distill_cfg.alpha:g} x {kd_term(distill_cfg)} + {1 - distill_cfg.alpha:g} x CE")
    (model_dir / "README.md").write_text(model_card(cfg, metrics), encoding="utf-8")
    return Artifact("distill", out_dir, record_files(out_dir, ["student"]), {"model_dir": "student"}, metrics, inp)


CACHE_FOLDER = "teacher-cache"


def heldout_against_teacher(student, teacher_artifact: Artifact, heldout, vocab_size: int) -> dict:
    """Held-out metrics of ``student`` against the full (local) teacher, in fp32."""
    import torch

    from edgedistill.hf import load_model
    from edgedistill.pipeline.evaluate import compare_on_heldout

    device = next(student.parameters()).device
    teacher = load_model(teacher_artifact.model_dir).to(device)
    training = student.training
    student.eval()
    try:
        with torch.no_grad():
            return compare_on_heldout(student, teacher, heldout.ids.to(device), targets=heldout.targets,
                                      vocab_size=vocab_size)
    finally:
        student.train(training)


def teacher_vocab_rows(model_dir: Path) -> int:
    """Logit rows of the teacher's lm_head, read from its config (the teacher is not loaded)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir).vocab_size


def ensure_teacher_cache(teacher_artifact: Artifact, train_windows, heldout, distill_cfg, vocab_size: int, folder: Path):
    """The top-k cache for these windows at ``folder``, built (loading the teacher once) when
    missing or built for something else."""
    import torch

    from edgedistill.hf import load_model
    from edgedistill.pipeline.distill.teacher_cache import TeacherCache, build_teacher_cache, cache_is_valid, windows_fingerprint
    from edgedistill.pipeline.distill.trainer import use_bf16

    ids = torch.cat([train_windows.ids, heldout.ids])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = use_bf16(distill_cfg.precision, device)  # the teacher runs as it would online
    fingerprint = windows_fingerprint(ids, teacher_artifact.hash, distill_cfg.teacher_topk, distill_cfg.temperature,
                                      vocab_size, bf16)
    if not cache_is_valid(folder, fingerprint):
        teacher = load_model(teacher_artifact.model_dir)
        build_teacher_cache(teacher.to(device), ids, folder, k=distill_cfg.teacher_topk, temperature=distill_cfg.temperature,
                            vocab_size=vocab_size, fingerprint=fingerprint, bf16=bf16,
                            on_batch=lambda done, total: print(f"teacher cache: {done}/{total} windows", file=sys.stderr,
                                                               flush=True))
        del teacher
    return TeacherCache(folder, fingerprint)


def kd_term(distill_cfg) -> str:
    """The KD term in words, e.g. ``T^2 * jsd(beta=0.3)`` at T = 2."""
    params = {"jsd": f"(beta={distill_cfg.beta})", "skew_kl": f"(a={distill_cfg.skew_alpha})",
              "skew_reverse_kl": f"(a={distill_cfg.skew_alpha})"}.get(distill_cfg.objective, "")
    scale = "T^2 * " if distill_cfg.scale_by_t2 else ""
    where = {"logit": "", "sequence": " on teacher responses (sparse top-k)",
             "on_policy": f" on student samples for lmbda = {distill_cfg.lmbda:g} of steps"}[distill_cfg.mode]
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
