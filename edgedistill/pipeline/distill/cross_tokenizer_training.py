"""Training across tokenizers: the packed windows aligned with the teacher's tokens, and
the trainer whose KD term is ``uld`` or ``gold`` (objectives and alignment in
``cross_tokenizer.py``) against an online teacher of another vocabulary."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgedistill.pipeline.distill.cross_tokenizer import (
    VocabMatch, WindowAlignment, align_window, cross_tokenizer_loss, merged_logprobs, sorted_l1,
)
from edgedistill.pipeline.distill.trainer import Trainer


class CrossTokenizerWindows:
    """Every packed student window (train, then held-out) aligned with the teacher's
    tokens of its text; ``aligned_share`` = student target tokens inside a group."""

    def __init__(self, windows, student_tokenizer, teacher_tokenizer, teacher_bos: int | None):
        self.alignments = [align_window(ids.tolist(), targets.tolist(), student_tokenizer, teacher_tokenizer, teacher_bos)
                           for ids, targets in zip(windows.ids, windows.targets)]
        targets = int(windows.targets[:, 1:].sum())
        self.aligned_share = sum(a.student_tokens for a in self.alignments) / max(1, targets)
        groups = sum(a.s_first.numel() for a in self.alignments)
        self.one_to_one_share = sum(a.one_to_one for a in self.alignments) / max(1, groups)
        self.pad = teacher_tokenizer.pad_token_id if teacher_tokenizer.pad_token_id is not None else 0

    def teacher_batch(self, window_indices) -> tuple[torch.Tensor, torch.Tensor, list[WindowAlignment]]:
        """(teacher ids (B, Lt_max) right-padded, attention mask, alignments)."""
        alignments = [self.alignments[int(w)] for w in window_indices]
        longest = max(a.teacher_ids.numel() for a in alignments)
        ids = torch.full((len(alignments), longest), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, a in enumerate(alignments):
            ids[row, :a.teacher_ids.numel()] = a.teacher_ids
            mask[row, :a.teacher_ids.numel()] = 1
        return ids, mask, alignments


class CrossTokenizerTrainer(Trainer):
    """:class:`Trainer` whose KD term is ``uld`` or ``gold`` against an online teacher of
    another vocabulary (``aligned``: :class:`CrossTokenizerWindows` over train then
    held-out windows; ``match``: the shared-text vocabulary, for ``gold`` and agreement)."""

    def __init__(self, *args, aligned: CrossTokenizerWindows, match: VocabMatch, **kwargs):
        super().__init__(*args, **kwargs)
        self.aligned, self.match = aligned, match

    def _teacher_hidden(self, window_ids) -> tuple[torch.Tensor, list[WindowAlignment]]:
        ids, mask, alignments = self.aligned.teacher_batch(window_ids)
        return teacher_hidden_states(self.teacher, ids, mask, self.acc.device), alignments

    def micro_loss(self, window_ids, batch, num_tokens: int, share: float):
        from edgedistill.data import next_token_labels

        ids = batch.ids.to(self.acc.device)
        labels = next_token_labels(ids, batch.targets.to(self.acc.device)).reshape(-1)
        with self._autocast():
            hidden, _ = self.body(ids)
            teacher_hidden, alignments = self._teacher_hidden(window_ids)
        with torch.autocast(ids.device.type, enabled=False):
            loss = cross_tokenizer_loss(hidden[:, :-1].reshape(labels.numel(), -1).float(),
                                        self.student.get_output_embeddings().weight, teacher_hidden.float(),
                                        self.teacher.get_output_embeddings().weight.detach(), labels, alignments,
                                        objective=self.cfg.objective, alpha=self.cfg.alpha,
                                        temperature=self.cfg.temperature, beta=self.cfg.beta, match=self.match,
                                        num_tokens=num_tokens)
        return loss, 0.0

    def heldout_metrics(self, limit: int | None = None, autocast: bool = True) -> dict:
        """:func:`heldout_across_tokenizers` over this trainer's held-out windows."""
        count = len(self.heldout[:limit] if limit else self.heldout)
        first = len(self.train)
        return heldout_across_tokenizers(self.student, self.teacher, self.heldout[:count], self.aligned, first,
                                         self.match, self.acc.device, autocast and self.bf16)


def teacher_hidden_states(teacher, ids: torch.Tensor, mask: torch.Tensor, device) -> torch.Tensor:
    """The teacher body's last hidden states of (B, Lt) ids (its logits are taken per row later)."""
    with torch.no_grad():
        return teacher.get_decoder()(ids.to(device), attention_mask=mask.to(device)).last_hidden_state


@torch.no_grad()
def heldout_across_tokenizers(student, teacher, heldout, aligned: CrossTokenizerWindows, first: int, match: VocabMatch,
                              device, bf16: bool = False) -> dict:
    """Over held-out windows (``aligned`` rows ``first``, ``first + 1``, ...), each model on
    its own tokens of the same text: student ppl/top-1 (student targets), teacher top-1 (its
    next tokens inside the groups), agreement on 1:1 groups (the teacher's argmax text is the
    student's argmax text), and the mean ULD per group at T = 1 (``student_teacher_val_uld``)."""
    import math

    training = student.training
    student.eval()
    head = teacher.get_output_embeddings().weight
    teacher_to_student = torch.full((head.shape[0],), -1, dtype=torch.long)
    teacher_to_student[match.teacher_ids] = match.student_ids
    totals = {"nll": 0.0, "hits": 0, "tokens": 0, "t_hits": 0, "t_tokens": 0, "agree": 0, "one": 0, "uld": 0.0,
              "groups": 0}
    try:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            for w in range(len(heldout)):
                t_ids, t_mask, (a,) = aligned.teacher_batch(torch.tensor([first + w]))
                ids = heldout.ids[w:w + 1].to(device)
                labels = ids[0, 1:].clone()
                labels[~heldout.targets[w, 1:].to(device)] = -100
                s_logits = student(ids).logits[0, :-1].float()
                t_hidden = teacher_hidden_states(teacher, t_ids, t_mask, device)
                t_logits = (t_hidden[0, :a.teacher_ids.numel() - 1] @ head.T).float()
                keep = labels != -100
                totals["nll"] += float(F.cross_entropy(s_logits[keep], labels[keep], reduction="sum"))
                totals["hits"] += int((s_logits[keep].argmax(-1) == labels[keep]).sum())
                totals["tokens"] += int(keep.sum())
                t_next = a.teacher_ids[1:].to(t_logits.device)
                t_rows = torch.cat([a.t_first, a.t_rest]).to(t_logits.device)
                totals["t_hits"] += int((t_logits[t_rows].argmax(-1) == t_next[t_rows]).sum())
                totals["t_tokens"] += int(t_rows.numel())
                merged = {*a.s_rest_group.tolist(), *a.t_rest_group.tolist()}  # groups of more than one token
                solo = torch.tensor([g for g in range(a.s_first.numel()) if g not in merged], dtype=torch.long)
                if solo.numel():
                    s_top = s_logits[a.s_first[solo]].argmax(-1).cpu()
                    t_top = teacher_to_student[t_logits[a.t_first[solo]].argmax(-1).cpu()]
                    totals["agree"] += int((s_top == t_top).sum())
                    totals["one"] += int(solo.numel())
                s_group = merged_logprobs(F.log_softmax(s_logits, -1), labels.clamp(min=0), a.s_first, a.s_rest,
                                          a.s_rest_group)
                t_group = merged_logprobs(F.log_softmax(t_logits, -1), t_next, a.t_first, a.t_rest, a.t_rest_group)
                totals["uld"] += float(sorted_l1(s_group.exp(), t_group.exp()).sum())
                totals["groups"] += a.s_first.numel()
    finally:
        student.train(training)
    tokens = max(1, totals["tokens"])
    return {"student_val_ppl": math.exp(totals["nll"] / tokens), "student_val_top1": totals["hits"] / tokens,
            "teacher_val_top1": totals["t_hits"] / max(1, totals["t_tokens"]),
            "student_teacher_val_top1_agreement": totals["agree"] / max(1, totals["one"]),
            "student_teacher_val_uld": totals["uld"] / max(1, totals["groups"])}
