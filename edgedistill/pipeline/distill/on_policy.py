"""On-policy distillation (GKD, Agarwal et al., 2024): the student learns on its own samples.

At each optimizer step, with probability ``lmbda`` (a pure function of (seed, step), so a
resumed run makes the same choices), the step's windows are cut to their first
``prompt_tokens`` tokens and the student samples a continuation of up to
``response_tokens`` tokens at ``sample_temperature`` (no top-k/top-p, eval mode, no
gradient). The teacher then scores those tokens exactly as it scores data: the loss is the
recipe's ``alpha * KD + (1 - alpha) * CE`` through the fused path, with
``distill.objective`` (GKD's generalized JSD(beta) is ``objective: jsd``), on the
generated positions only (the prompt and anything after an EOS are masked; the EOS
itself is a target). The other steps train on the data windows unchanged (GKD's
supervised share), so ``lmbda = 0`` is plain logit KD.

Under data parallelism every process samples the whole global batch with the same seed
(identical weights, identical samples) and then takes its slice, so the token count that
normalizes the loss stays global. With a teacher behind an API (``api_teacher.py``) the
samples are scored through it (sparse top-k, forward KL at T = 1).
"""

from __future__ import annotations

import torch

from edgedistill.data import Packed
from edgedistill.pipeline.distill.trainer import Trainer


def is_on_policy_step(step: int, seed: int, lmbda: float) -> bool:
    """Whether step ``step`` trains on student samples: a seeded coin with P(heads) = lmbda."""
    if lmbda <= 0:
        return False
    draw = torch.rand((), generator=torch.Generator().manual_seed(seed * 7_919 + step + 1))
    return bool(draw < lmbda)


@torch.no_grad()
def sample_continuations(model, prompts: torch.Tensor, new_tokens: int, temperature: float, eos: int,
                         seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, P + new_tokens), targets (B, P + new_tokens) bool) with the model's sampled
    continuation of every prompt row (B, P); positions after a row's first EOS hold EOS
    and are not targets."""
    device = next(model.parameters()).device
    training = model.training
    model.eval()
    try:
        torch.manual_seed(seed)
        sample = temperature > 0
        out = model.generate(prompts.to(device), attention_mask=torch.ones_like(prompts, device=device),
                             max_new_tokens=new_tokens, do_sample=sample, temperature=temperature if sample else None,
                             top_k=0 if sample else None, top_p=1.0 if sample else None, eos_token_id=eos,
                             # no padding here (full attention mask); a pad id other than EOS keeps generate from
                             # mistaking a window that ends on a document's EOS for right padding
                             pad_token_id=model.config.pad_token_id if model.config.pad_token_id is not None else eos)
    finally:
        model.train(training)
    generated = out[:, prompts.shape[1]:].cpu()
    if generated.shape[1] < new_tokens:  # every row stopped early
        pad = torch.full((generated.shape[0], new_tokens - generated.shape[1]), eos, dtype=generated.dtype)
        generated = torch.cat([generated, pad], 1)
    is_eos = generated == eos
    after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0  # strictly after the first EOS
    generated = torch.where(after_eos, torch.full_like(generated, eos), generated)  # generate pads there
    targets = torch.cat([torch.zeros_like(prompts, dtype=torch.bool), ~after_eos], 1)
    return torch.cat([prompts, generated], 1), targets


class OnPolicyTrainer(Trainer):
    """:class:`Trainer` whose batches are, with probability ``lmbda``, student samples.

    The teacher scores them online, or, with ``api`` (the recipe's ``teacher_api`` section)
    and ``token_map`` (the data steps then read ``cache``, its scores of the windows),
    through the API when the batch is drawn (``api_teacher.score_live``)."""

    def __init__(self, *args, eos_token_id: int, api=None, token_map=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.api, self.token_map = api, token_map
        if self.teacher is None and token_map is None:
            raise ValueError("on-policy KD needs the online teacher or an API teacher (it scores new samples)")
        self.eos = eos_token_id
        self._live: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._counts: dict[str, int] = {}  # this step's generated tokens (and API-aligned positions), for its log row

    def batch_for(self, step: int, indices: torch.Tensor, batch: Packed) -> Packed:
        cfg, self._live, self._counts = self.cfg, None, {}
        if not is_on_policy_step(step, self.seed, cfg.on_policy.lmbda):
            return batch
        ids, targets = sample_continuations(self.student, batch.ids[:, :cfg.prompt_tokens],
                                            min(cfg.response_tokens, batch.ids.shape[1] - cfg.prompt_tokens),
                                            cfg.sample_temperature, self.eos, seed=self.seed * 1_000_003 + step)
        self._counts["generated_tokens"] = int(targets.sum())
        if self.token_map is not None:
            from edgedistill.pipeline.distill.api_teacher import score_live

            top_ids, top_lps, aligned = score_live(self.api, cfg.teacher_topk, ids, self.token_map)
            self._live = {int(w): (top_ids[i], top_lps[i]) for i, w in enumerate(indices)}
            self._counts.update(aligned_positions=aligned, scored_positions=ids.shape[0] * (ids.shape[1] - 1))
        return Packed(ids, targets)

    def _teacher_kwargs(self, window_ids: torch.Tensor, ids: torch.Tensor, want_states: bool):
        if self._live is None:
            return super()._teacher_kwargs(window_ids, ids, want_states)
        rows = [self._live[int(w)] for w in window_ids]
        k = rows[0][0].shape[-1]
        return {"teacher_topk_ids": torch.stack([r[0] for r in rows]).view(-1, k).to(ids.device),
                "teacher_topk_logprobs": torch.stack([r[1] for r in rows]).view(-1, k).to(ids.device)}, None

    def step(self, step: int) -> dict:
        row = super().step(step)
        row["on_policy"] = is_on_policy_step(step, self.seed, self.cfg.on_policy.lmbda)
        row.update(self._counts)
        return row


def on_policy_metrics(log: list[dict]) -> dict:
    """Counts over the whole run's log rows (a resumed run's too)."""
    metrics = {"on_policy_steps": sum(1 for row in log if row.get("on_policy")),
               "on_policy_generated_tokens": sum(row.get("generated_tokens", 0) for row in log)}
    scored = sum(row.get("scored_positions", 0) for row in log)
    if scored:
        metrics["on_policy_topk_aligned_share"] = sum(row.get("aligned_positions", 0) for row in log) / scored
    return metrics
