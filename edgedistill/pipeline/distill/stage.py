"""Distill stage: train the student (pruned, or independent) on the teacher's signal.

The loop lives in ``trainer.py`` (Accelerate, accumulation, checkpoints, evaluation);
this module wires it to the build: data, the teacher signal (``TEACHER_SIGNALS``: online
local teacher, offline top-k cache, API scores, sequence responses, cross-tokenizer
alignment; each prepared once, the main process first where it writes a shared file),
and the student folder with its training log, loss curve and model card.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgedistill.artifacts import Artifact, record_files
from edgedistill.config import to_dict
from edgedistill.stage_context import StageContext

OUTPUTS = ("student",)
RESUMABLE = True  # keeps checkpoints in the state folder the orchestrator passes
# caches in the build folder that outlive a stage key: the top-k cache, API scores, responses
CACHE_FOLDER, SCORES_FOLDER, RESPONSES_FOLDER = "teacher-cache", "teacher-scores", "teacher-responses"
SHARED_FOLDERS = (CACHE_FOLDER, SCORES_FOLDER, RESPONSES_FOLDER)


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


@dataclass
class SignalInputs:
    """What every teacher signal is prepared from."""

    cfg: dict  # the stage config
    teacher_artifact: Artifact | None
    tokenizer: object  # the student's
    train: object  # Packed windows of the data
    heldout: object
    vocab_size: int | None  # shared logit rows (None: the vocabularies differ)
    folder: Path  # the build folder: shared caches live here

    @property
    def distill(self):
        return self.cfg["distill"]

    @property
    def api(self):
        """The recipe's ``teacher_api`` section when distill reads the teacher from it, else None."""
        return self.cfg.get("teacher_api")


@dataclass
class Signal:
    """A prepared teacher signal: the windows the student trains on, the teacher the
    trainer reads (online model, or rows of sparse top-k), the trainer class and what it
    needs beyond the common arguments, and metrics of the preparation."""

    train: object
    heldout: object
    teacher: object = None
    cache: object = None
    trainer_class: type | None = None
    trainer_kwargs: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    # held-out metrics at the end: the trainer's own, or (sequence mode) renamed and joined by
    # the full local teacher's on the data's held-out windows
    final_quality: Callable | None = None


def _online(inputs: SignalInputs) -> Signal:
    from edgedistill.hf import load_model

    return Signal(inputs.train, inputs.heldout, teacher=load_model(inputs.teacher_artifact.model_dir))


def _topk_cache(inputs: SignalInputs) -> Signal:
    cache = ensure_teacher_cache(inputs.teacher_artifact, inputs.train, inputs.heldout, inputs.distill, inputs.vocab_size,
                                 inputs.folder / CACHE_FOLDER)
    return Signal(inputs.train, inputs.heldout, cache=cache)


def _api_scores(inputs: SignalInputs) -> Signal:
    import torch

    from edgedistill.pipeline.distill.api_teacher import scored_windows

    distill = inputs.distill
    cache = scored_windows(inputs.api, distill.teacher_topk, torch.cat([inputs.train.ids, inputs.heldout.ids]),
                           inputs.tokenizer, inputs.folder)
    if cache.aligned_share < distill.min_aligned_share:  # another tokenizer behind the API: the KD term would be CE
        from edgedistill.errors import UserError

        raise UserError(f"only {cache.aligned_share:.0%} of the windows' tokens came back from teacher_api.url as the "
                        f"tokens sent (distill.min_aligned_share={distill.min_aligned_share:g}): the API's tokenizer is "
                        "not the student's; use distill.mode=sequence (by text) or lower the floor")
    extra = {}
    if distill.mode == "on_policy":  # samples are scored through the API when drawn
        from edgedistill.pipeline.distill.sequence_data import TokenMap

        extra.update(api=inputs.api, token_map=TokenMap(inputs.tokenizer))
    return Signal(inputs.train, inputs.heldout, cache=cache, trainer_kwargs=extra,
                  metrics={"teacher_topk_aligned_share": cache.aligned_share})


def _sequence(inputs: SignalInputs) -> Signal:
    from edgedistill.pipeline.distill.sequence import sequence_windows

    train, heldout, cache, metrics = sequence_windows(inputs.cfg, inputs.teacher_artifact, inputs.tokenizer, inputs.train,
                                                      inputs.folder, same_vocabulary=inputs.vocab_size is not None)
    data_heldout, local = inputs.heldout, inputs.api is None

    def final_quality(trainer) -> dict:
        quality = {f"sequence_{name}": value for name, value in trainer.heldout_metrics(autocast=False).items()}
        if local and inputs.vocab_size is not None:  # comparable with the other modes: the data's windows, full teacher
            quality.update(heldout_against_teacher(trainer.student, inputs.teacher_artifact, data_heldout,
                                                   inputs.vocab_size))
        elif local:  # another tokenizer: the metrics uld / gold report, on the same held-out windows
            quality.update(heldout_across_vocabularies(trainer.student, inputs.teacher_artifact, inputs.tokenizer,
                                                       data_heldout))
        return quality

    return Signal(train, heldout, cache=cache, metrics=metrics, final_quality=final_quality)


def aligned_with_teacher(windows, tokenizer, teacher_dir: Path):
    """(CrossTokenizerWindows of ``windows`` against the teacher's tokens of their text, the
    VocabMatch of the two vocabularies) for a local teacher of another tokenizer."""
    from edgedistill.hf import load_tokenizer
    from edgedistill.data import window_bos
    from edgedistill.pipeline.distill.cross_tokenizer import VocabMatch
    from edgedistill.pipeline.distill.cross_tokenizer_training import CrossTokenizerWindows

    teacher_tokenizer = load_tokenizer(teacher_dir)
    aligned = CrossTokenizerWindows(windows, tokenizer, teacher_tokenizer, window_bos(teacher_tokenizer))
    return aligned, VocabMatch(teacher_tokenizer, tokenizer)


def _cross_tokenizer(inputs: SignalInputs) -> Signal:
    import torch

    from edgedistill.hf import load_model
    from edgedistill.data import Packed
    from edgedistill.pipeline.distill.cross_tokenizer_training import CrossTokenizerTrainer

    both = Packed(torch.cat([inputs.train.ids, inputs.heldout.ids]), torch.cat([inputs.train.targets, inputs.heldout.targets]))
    aligned, match = aligned_with_teacher(both, inputs.tokenizer, inputs.teacher_artifact.model_dir)
    floor = inputs.distill.min_aligned_share
    if aligned.aligned_share < floor:
        from edgedistill.errors import UserError

        raise UserError(f"only {aligned.aligned_share:.0%} of the student's target tokens align with the teacher's by "
                        f"text (distill.min_aligned_share={floor:g}); check the tokenizers or lower the floor")
    return Signal(inputs.train, inputs.heldout, teacher=load_model(inputs.teacher_artifact.model_dir),
                  trainer_class=CrossTokenizerTrainer, trainer_kwargs={"aligned": aligned, "match": match},
                  metrics={"cross_tokenizer_aligned_share": aligned.aligned_share,
                           "cross_tokenizer_one_to_one_share": aligned.one_to_one_share,
                           "cross_tokenizer_shared_texts": match.matched})


@dataclass(frozen=True)
class TeacherSignal:
    """One way of reading the teacher: when it applies (from the stage config and whether
    the vocabularies match), whether preparing it writes a shared file (the main process
    then goes first), and how it is prepared."""

    applies: Callable[[SignalInputs], bool]
    prepare: Callable[[SignalInputs], Signal]
    writes_shared_files: bool = False


def _is_cross(distill) -> bool:
    from edgedistill.registry_names import CROSS_OBJECTIVES

    return distill.objective in CROSS_OBJECTIVES


# The teacher signals, first match wins (the recipe's checks make at most one of the first
# four apply; the online same-vocabulary teacher is what remains).
TEACHER_SIGNALS: dict[str, TeacherSignal] = {
    "sequence": TeacherSignal(lambda i: i.distill.mode == "sequence", _sequence, writes_shared_files=True),
    "api_scores": TeacherSignal(lambda i: i.api is not None, _api_scores, writes_shared_files=True),
    "topk_cache": TeacherSignal(lambda i: i.distill.teacher_topk > 0, _topk_cache, writes_shared_files=True),
    "cross_tokenizer": TeacherSignal(lambda i: _is_cross(i.distill), _cross_tokenizer),
    "online": TeacherSignal(lambda i: True, _online),
}


def pick_signal(inputs: SignalInputs) -> str:
    return next(name for name, signal in TEACHER_SIGNALS.items() if signal.applies(inputs))


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


def heldout_across_vocabularies(student, teacher_artifact: Artifact, tokenizer, heldout) -> dict:
    """Held-out metrics of ``student`` against a local teacher of another tokenizer, each on
    its own tokens of the same text (``cross_tokenizer_training.heldout_across_tokenizers``)."""
    from edgedistill.hf import load_model
    from edgedistill.pipeline.distill.cross_tokenizer_training import heldout_across_tokenizers

    aligned, match = aligned_with_teacher(heldout, tokenizer, teacher_artifact.model_dir)
    device = next(student.parameters()).device
    teacher = load_model(teacher_artifact.model_dir).to(device)
    return heldout_across_tokenizers(student, teacher, heldout, aligned, 0, match, device)


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
