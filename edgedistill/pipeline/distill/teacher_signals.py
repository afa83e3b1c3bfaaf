"""The teacher signals the distill stage trains on, first match wins (``TEACHER_SIGNALS``):
sequence responses, scores from a teacher API, the offline top-k cache, a local teacher of
another tokenizer aligned by text, or the online local teacher. Each is prepared once from
:class:`SignalInputs` into a :class:`Signal` (windows, the teacher the trainer reads, the
trainer class and its extra arguments, preparation metrics); the ones that write into the
build folder's shared caches (the ``*_FOLDER`` names) run in the main process first."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgedistill.artifacts import Artifact
from edgedistill.progress import say

# caches in the build folder that outlive a stage key: the top-k cache, API scores, responses
CACHE_FOLDER, SCORES_FOLDER, RESPONSES_FOLDER = "teacher-cache", "teacher-scores", "teacher-responses"


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
                            on_batch=lambda done, total: say(f"teacher cache: {done}/{total} windows"))
        del teacher
    return TeacherCache(folder, fingerprint)
