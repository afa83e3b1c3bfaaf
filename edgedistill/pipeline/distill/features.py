"""Feature (hidden-state) distillation: align chosen student layers with teacher layers.

For each pair (student layer i <- teacher layer j) in ``layer_map``, the student's hidden
states (B, T, Hs) are projected to the teacher's width Ht by a learned linear map (the
identity when Hs == Ht, as in TinyBERT's W_h, Jiao et al. 2020) and compared with the
teacher's (B, T, Ht):

* ``mse``: mean over hidden channels of (proj(h_s) - h_t)^2, per token;
* ``cosine``: 1 - cos(proj(h_s), h_t), per token.

The per-token values are averaged over unmasked tokens and then over the mapped layers.
Layer indices follow HF ``output_hidden_states``: 0 is the embedding output, L the last.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def uniform_layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Student layer i (1..Ls) <- teacher layer round(i * Lt / Ls): evenly spread, last to last."""
    return {i: round(i * teacher_layers / student_layers) for i in range(1, student_layers + 1)}


def _mse_per_token(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return (student - teacher).pow(2).mean(dim=-1)  # (B, T, H) -> (B, T)


def _cosine_per_token(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-8)  # (B, T)


FEATURE_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": _mse_per_token,
    "cosine": _cosine_per_token,
}


class FeatureDistillationLoss(torch.nn.Module):
    """Learned projections (one per mapped student layer) + MSE or cosine alignment."""

    def __init__(self, student_width: int, teacher_width: int, layer_map: dict[int, int], kind: str = "mse"):
        super().__init__()
        if kind not in FEATURE_LOSSES:
            raise ValueError(f"unknown feature loss '{kind}'; available: {', '.join(FEATURE_LOSSES)}")
        self.layer_map, self.kind = dict(layer_map), kind
        self.projections = torch.nn.ModuleDict({
            str(i): torch.nn.Linear(student_width, teacher_width, bias=False) if student_width != teacher_width
            else torch.nn.Identity()
            for i in self.layer_map
        })

    def forward(self, student_hidden_states, teacher_hidden_states, attention_mask: torch.Tensor | None = None):
        """student/teacher_hidden_states: sequences of (B, T, H) (HF ``hidden_states``);
        attention_mask: (B, T), 1 = counted. Returns the mean loss over layers and tokens."""
        per_layer = []
        for student_index, teacher_index in self.layer_map.items():
            projected = self.projections[str(student_index)](student_hidden_states[student_index].float())  # (B, T, Ht)
            per_token = FEATURE_LOSSES[self.kind](projected, teacher_hidden_states[teacher_index].float())  # (B, T)
            if attention_mask is None:
                per_layer.append(per_token.mean())
            else:
                weights = attention_mask.to(per_token.dtype)
                per_layer.append((per_token * weights).sum() / weights.sum().clamp(min=1.0))
        return torch.stack(per_layer).mean()
