"""The distillation training loop, on Hugging Face Accelerate.

One optimizer step consumes ``batch_size`` packed windows (across all processes and
``grad_accumulation`` micro-batches) and minimizes

    alpha * KD + (1 - alpha) * CE  [+ feature_weight * feature alignment]

KD and CE come from the fused chunked path (``fused.py``; conventions in ``losses.py``)
against the online teacher (its final hidden states and lm_head) or an offline top-k
cache (``teacher_cache.py``; the teacher is then never loaded). Normalization: the loss
of every micro-batch is divided by the number of target tokens of the whole optimizer
step (all micro-batches, all processes), so accumulation and data parallelism give the
same gradient as one big batch; DDP's gradient averaging over W processes is undone by
scaling each process's loss by W. The batch order is a pure function of (seed, step), so
a run resumed from a checkpoint sees exactly the batches an uninterrupted run would.

``accelerate launch`` runs this unchanged under DDP (each process takes its slice of
every global batch); a single process needs no launcher.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from edgedistill.data import Packed, next_token_labels
from edgedistill.errors import UserError
from edgedistill.pipeline.distill.lr_schedule import learning_rate_at
from edgedistill.progress import say


def batch_indices(step: int, windows: int, batch_size: int, seed: int) -> torch.Tensor:
    """Window indices of global batch ``step``: epoch e = step // (windows // batch_size)
    walks a permutation seeded by (seed, e), so any step's batch is known without replaying."""
    per_epoch = windows // batch_size
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(windows, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[position * batch_size: (position + 1) * batch_size]


def kd_settings(distill_cfg):
    """The recipe's loss definition as the fused path's :class:`KDSettings`."""
    from edgedistill.pipeline.distill.fused import KDSettings

    return KDSettings(alpha=distill_cfg.alpha, temperature=distill_cfg.temperature, objective=distill_cfg.objective,
                      beta=distill_cfg.beta, skew_alpha=distill_cfg.skew_alpha, scale_by_t2=distill_cfg.scale_by_t2)


def use_bf16(precision: str, device_type: str) -> bool:
    """Whether to autocast to bf16: ``auto`` picks it only where bf16 matmuls are native
    (CUDA with bf16 support, or a CPU with AVX512-BF16 or AMX); elsewhere bf16 emulation
    is slower than fp32."""
    if precision != "auto":
        return precision == "bf16"
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device_type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


class StudentBody(torch.nn.Module):
    """The student (and feature-KD projections) as one module whose forward returns final
    hidden states, not logits: DDP needs the trained parameters behind one forward call,
    and the fused loss needs the hidden states (it applies the lm_head chunk by chunk).
    ``get_decoder()`` is the body under every family (``base_model`` is the whole model
    for Gemma 3, whose base_model_prefix names a multimodal wrapper)."""

    def __init__(self, student, feature_loss: torch.nn.Module | None):
        super().__init__()
        self.student, self.feature_loss = student, feature_loss

    def forward(self, ids: torch.Tensor):
        out = self.student.get_decoder()(ids, output_hidden_states=self.feature_loss is not None)
        return out.last_hidden_state, out.hidden_states


@dataclass
class TrainResult:
    log: list[dict]  # one row per optimizer step; eval rows carry "val_*" keys
    resumed_from: int = 0  # step of the checkpoint the run continued from (0 = fresh)
    stopped_early: bool = False


class Trainer:
    """Holds the models, data and settings of one distillation run; :meth:`fit` runs it.

    teacher: the online teacher (or None with ``cache``); cache: a :class:`TeacherCache`
    whose window w is ``train[w]`` for w < len(train) and ``heldout[w - len(train)]`` after.
    loss_impl: "fused" (chunked, never (N, V) logits) or "naive" (materialized logits;
    for benchmarks and as a reference).
    """

    def __init__(self, student, train: Packed, heldout: Packed, distill_cfg, *, seed: int, teacher=None, cache=None,
                 vocab_size: int | None = None, state_dir: Path | None = None, checkpoint_every: int = 0,
                 keep_checkpoints: int = 2, log_path: Path | None = None, loss_impl: str = "fused", accelerator=None):
        from accelerate import Accelerator

        if (teacher is None) == (cache is None):
            raise ValueError("give exactly one of teacher and cache")
        self.cfg, self.seed, self.train, self.heldout = distill_cfg, seed, train, heldout
        self.teacher, self.cache, self.vocab_size = teacher, cache, vocab_size
        self.state_dir, self.checkpoint_every, self.keep = state_dir, checkpoint_every, keep_checkpoints
        self.log_path, self.loss_impl, self.settings = log_path, loss_impl, kd_settings(distill_cfg)
        # Accelerate keeps one process-wide state whose mixed-precision mode cannot change
        # between runs in a process, so bf16 autocast is applied here (``_autocast``), not
        # through Accelerator(mixed_precision=...).
        self.acc = accelerator or Accelerator()
        self.bf16 = use_bf16(distill_cfg.precision, self.acc.device.type)
        per_step = distill_cfg.grad_accumulation * self.acc.num_processes
        if distill_cfg.batch_size % per_step:
            raise UserError(f"distill.batch_size={distill_cfg.batch_size} must be a multiple of distill.grad_accumulation "
                            f"({distill_cfg.grad_accumulation}) x processes ({self.acc.num_processes})")
        if len(train) < distill_cfg.batch_size:
            raise UserError(f"the data gives {len(train)} training windows, fewer than distill.batch_size={distill_cfg.batch_size}; "
                            "add data or lower the batch size")
        self.micro_batch = distill_cfg.batch_size // per_step
        feature = None
        if distill_cfg.feature_weight > 0:
            if teacher is None:
                raise UserError("feature KD (distill.feature_weight > 0) needs the online teacher's hidden states; "
                                "set distill.teacher_topk=0 or distill.feature_weight=0")
            from edgedistill.pipeline.distill.features import FeatureDistillationLoss, uniform_layer_map

            feature = FeatureDistillationLoss(
                student.config.hidden_size, teacher.config.hidden_size,
                uniform_layer_map(student.config.num_hidden_layers, teacher.config.num_hidden_layers), distill_cfg.feature_loss)
        self.student = student.to(self.acc.device)
        body = StudentBody(self.student, feature.to(self.acc.device) if feature is not None else None)
        self.optimizer = torch.optim.AdamW(body.parameters(), lr=distill_cfg.learning_rate,
                                           weight_decay=distill_cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: learning_rate_at(step, distill_cfg) / distill_cfg.learning_rate)
        self.body, self.optimizer = self.acc.prepare(body, self.optimizer)
        if teacher is not None:
            teacher.to(self.acc.device).eval().requires_grad_(False)

    # --- one optimizer step ------------------------------------------------------------
    def _teacher_kwargs(self, window_ids: torch.Tensor, ids: torch.Tensor, want_states: bool):
        """Teacher side of the fused loss for micro-batch ``ids`` (B, L), plus its hidden states.
        Nothing when the loss does not read the teacher (alpha 0, no feature KD): a CE-only run
        costs the student's compute, not the teacher's (the teacher still scores held-out windows)."""
        if self.settings.alpha == 0 and not want_states:
            return {}, None
        if self.cache is not None:
            top_ids, top_logprobs = self.cache.rows(window_ids)  # (B, L-1, k)
            k = top_ids.shape[-1]
            return {"teacher_topk_ids": top_ids.view(-1, k).to(ids.device),
                    "teacher_topk_logprobs": top_logprobs.view(-1, k).to(ids.device)}, None
        with torch.no_grad():
            out = self.teacher.get_decoder()(ids, output_hidden_states=want_states)
        head = self.teacher.get_output_embeddings()
        hidden = out.last_hidden_state[:, :-1].reshape(-1, out.last_hidden_state.shape[-1])
        return {"teacher_hidden": hidden.to(head.weight.dtype), "teacher_weight": head.weight[:self.vocab_size].detach(),
                "teacher_bias": None if head.bias is None else head.bias[:self.vocab_size].detach()}, out.hidden_states

    def micro_loss(self, window_ids: torch.Tensor, batch: Packed, num_tokens: int, share: float) -> tuple[torch.Tensor, float]:
        """Loss of one micro-batch, already divided by the step's ``num_tokens``; ``share`` =
        this micro-batch's fraction of the step's positions (weights the feature term).
        Returns (loss, feature term for logging)."""
        from edgedistill.pipeline.distill.fused import fused_linear_distillation_loss

        ids = batch.ids.to(self.acc.device)
        labels = next_token_labels(ids, batch.targets.to(self.acc.device)).reshape(-1)
        want_states = self.body_module.feature_loss is not None
        with self._autocast():
            hidden, student_states = self.body(ids)
            teacher, teacher_states = self._teacher_kwargs(window_ids, ids, want_states)
        student_hidden = hidden[:, :-1].reshape(labels.numel(), -1)
        head = self.student.get_output_embeddings()
        # The KD/CE loss always runs in fp32 outside autocast, so the KL over the
        # vocabulary keeps its precision while the transformer bodies run in bf16.
        with torch.autocast(ids.device.type, enabled=False):
            weight = head.weight[:self.vocab_size]
            bias = None if head.bias is None else head.bias[:self.vocab_size]
            student_hidden = student_hidden.to(weight.dtype)
            if self.loss_impl == "naive":
                loss = self._naive_loss(student_hidden, weight, bias, labels, teacher, num_tokens)
            else:
                loss = fused_linear_distillation_loss(student_hidden, weight, labels, settings=self.settings,
                                                      student_bias=bias, num_tokens=num_tokens, **teacher)
            feature_term = 0.0
            if want_states:
                feature = self.body_module.feature_loss(student_states, teacher_states) * share
                loss = loss + self.cfg.feature_weight * feature
                feature_term = float(feature.detach()) / share
        return loss, feature_term

    def _naive_loss(self, student_hidden, weight, bias, labels, teacher: dict, num_tokens: int):
        """The plain reference on materialized (N, V) logits (what the fused path replaces)."""
        from edgedistill.pipeline.distill.losses import distillation_loss, sparse_distillation_loss

        logits = torch.nn.functional.linear(student_hidden, weight, bias)  # (N, V)
        if not teacher:  # alpha 0
            return torch.nn.functional.cross_entropy(logits, labels, ignore_index=self.settings.ignore_index,
                                                     reduction="sum") / num_tokens
        common = dict(alpha=self.settings.alpha, temperature=self.settings.temperature,
                      scale_by_t2=self.settings.scale_by_t2, num_tokens=num_tokens)
        if "teacher_topk_ids" in teacher:
            return sparse_distillation_loss(logits, teacher["teacher_topk_ids"], teacher["teacher_topk_logprobs"], labels,
                                            **common)[0]
        teacher_logits = torch.nn.functional.linear(teacher["teacher_hidden"], teacher["teacher_weight"], teacher["teacher_bias"])
        return distillation_loss(logits, teacher_logits, labels, objective=self.settings.objective, beta=self.settings.beta,
                                 skew_alpha=self.settings.skew_alpha, **common)[0]

    def _autocast(self):
        return torch.autocast(self.acc.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @property
    def body_module(self) -> StudentBody:
        return self.acc.unwrap_model(self.body)

    def batch_for(self, step: int, indices: torch.Tensor, batch: Packed) -> Packed:
        """The global batch step ``step`` trains on, given its data windows and their
        indices (on-policy KD replaces continuations with the student's own samples)."""
        return batch

    def step(self, step: int) -> dict:
        """One optimizer step over global batch ``step``; returns its log row."""
        indices = batch_indices(step, len(self.train), self.cfg.batch_size, self.seed)
        batch = self.batch_for(step, indices, self.train[indices])
        num_tokens = int((next_token_labels(batch.ids, batch.targets) != -100).sum())  # the whole step, every process
        per_process = self.cfg.batch_size // self.acc.num_processes
        mine = slice(self.acc.process_index * per_process, (self.acc.process_index + 1) * per_process)
        indices, batch = indices[mine], batch[mine]
        positions = batch.ids.shape[0] * (batch.ids.shape[1] - 1) * self.acc.num_processes
        total, feature_total = 0.0, 0.0
        for start in range(0, per_process, self.micro_batch):
            part = slice(start, start + self.micro_batch)
            last = start + self.micro_batch >= per_process
            with nullcontext() if last else self.acc.no_sync(self.body):
                share = self.micro_batch * (batch.ids.shape[1] - 1) / positions
                loss, feature = self.micro_loss(indices[part], batch[part], num_tokens, share)
                self.acc.backward(loss * self.acc.num_processes)  # undo DDP's mean over processes
            total += float(loss.detach())
            feature_total += feature * share
        if self.cfg.grad_clip > 0:
            self.acc.clip_grad_norm_(self.body.parameters(), self.cfg.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = float(self.acc.reduce(torch.tensor(total, device=self.acc.device), reduction="sum"))
        row = {"step": step + 1, "loss": loss, "lr": lr, "tokens": num_tokens}
        if self.body_module.feature_loss is not None:
            row["feature_loss"] = feature_total
        return row

    # --- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def heldout_metrics(self, limit: int | None = None, autocast: bool = True) -> dict:
        """:func:`compare_on_heldout` (online teacher) or :func:`compare_with_topk_cache`
        (cache) over the first ``limit`` held-out windows (all when None), target tokens only;
        ``autocast``: in the training precision, else in the weights' dtype."""
        from edgedistill.pipeline.evaluate import compare_on_heldout, compare_with_topk_cache

        heldout = self.heldout[:limit] if limit else self.heldout
        training = self.student.training
        self.student.eval()
        try:
            with torch.autocast(self.acc.device.type, dtype=torch.bfloat16, enabled=autocast and self.bf16):
                if self.cache is not None:
                    window_ids = torch.arange(len(heldout)) + len(self.train)
                    return compare_with_topk_cache(self.student, heldout.ids.to(self.acc.device), *self.cache.rows(window_ids),
                                                   targets=heldout.targets, vocab_size=self.vocab_size,
                                                   temperature=self.cache.temperature)
                return compare_on_heldout(self.student, self.teacher, heldout.ids.to(self.acc.device),
                                          targets=heldout.targets, vocab_size=self.vocab_size)
        finally:
            self.student.train(training)

    def evaluate(self) -> dict:
        """Held-out metrics (first ``eval_windows`` held-out windows; target tokens only):
        ``val_loss`` (student CE), ``val_ppl``, ``val_top1``, teacher top-1, agreement, KL
        to the teacher and ``val_retention_top1`` = student top-1 / teacher top-1."""
        metrics = self.heldout_metrics(self.cfg.eval_windows or None)
        row = {"val_loss": math.log(metrics["student_val_ppl"]), "val_ppl": metrics["student_val_ppl"],
               "val_top1": metrics["student_val_top1"], "val_teacher_top1": metrics["teacher_val_top1"],
               "val_agreement": metrics["student_teacher_val_top1_agreement"]}
        if "student_teacher_val_kl" in metrics:
            row["val_kl"] = metrics["student_teacher_val_kl"]
        teacher_top1 = metrics["teacher_val_top1"]
        row["val_retention_top1"] = metrics["student_val_top1"] / teacher_top1 if teacher_top1 > 0 else float("nan")
        return row

    # --- the run ----------------------------------------------------------------------
    def fit(self) -> TrainResult:
        from edgedistill.pipeline.distill.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

        cfg, result = self.cfg, TrainResult(log=[])
        start = 0
        checkpoint = latest_checkpoint(self.state_dir)
        if checkpoint is not None:
            start, result.log = load_checkpoint(checkpoint, self.student, self.body_module.feature_loss,
                                                self.optimizer, self.scheduler)
            result.resumed_from = start
            self._say(f"distill: resuming from the checkpoint at step {start} ({checkpoint})")
        self._rewrite_log(result.log)
        self.student.train()
        started, tokens_done = time.perf_counter(), 0
        with self._progress(start) as advance:
            for step in range(start, cfg.steps):
                row = self.step(step)
                tokens_done += cfg.batch_size * (self.train.ids.shape[1] - 1)
                elapsed = time.perf_counter() - started
                row["tokens_per_s"] = tokens_done / elapsed if elapsed > 0 else 0.0
                last = step + 1 == cfg.steps
                if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last:
                    row.update(self.evaluate())
                    if cfg.stop_at_retention and row["val_retention_top1"] >= cfg.stop_at_retention:
                        result.stopped_early = not last
                        last = True
                result.log.append(row)
                self._append_log(row)
                advance(row)
                if last:
                    break
                if self.checkpoint_every and (step + 1) % self.checkpoint_every == 0:
                    if self.acc.is_main_process:
                        save_checkpoint(self.state_dir, step + 1, self.student, self.body_module.feature_loss,
                                        self.optimizer, self.scheduler, result.log, self.keep)
                    self.acc.wait_for_everyone()  # no process runs ahead of a checkpoint being written
        self.student.eval()
        return result

    def _say(self, message: str) -> None:
        if self.acc.is_main_process:
            say(message)

    def _rewrite_log(self, rows: list[dict]) -> None:
        if self.log_path is not None and self.acc.is_main_process:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    def _append_log(self, row: dict) -> None:
        if self.log_path is not None and self.acc.is_main_process:
            with self.log_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")

    def _progress(self, start: int):
        """A rich progress bar (steps, loss, tokens/s, ETA) on a terminal; elsewhere a plain
        line every tenth of the run, so logs of unattended runs still show progress."""
        from contextlib import contextmanager

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        total = self.cfg.steps
        interactive = sys.stderr.isatty() and self.acc.is_main_process

        @contextmanager
        def bar():
            columns = (TextColumn("distill"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
                       TextColumn("{task.fields[tps]:,.0f} tok/s"), TimeRemainingColumn())
            with Progress(*columns, transient=True, disable=not interactive) as progress:
                task = progress.add_task("distill", total=total, completed=start, loss=float("nan"), tps=0.0)
                every = max(1, total // 10)

                def advance(row: dict) -> None:
                    progress.update(task, advance=1, loss=row["loss"], tps=row["tokens_per_s"])
                    if not interactive and (row["step"] % every == 0 or "val_loss" in row):
                        extra = f" val_loss {row['val_loss']:.3f}" if "val_loss" in row else ""
                        self._say(f"distill step {row['step']}/{total} loss {row['loss']:.3f} "
                                  f"{row['tokens_per_s']:,.0f} tok/s{extra}")

                yield advance

        return bar()


def plot_loss_curve(log: list[dict], path: Path, title: str = "distillation") -> None:
    """Training loss per step and held-out loss at each evaluation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    axis.plot([r["step"] for r in log], [r["loss"] for r in log], label="training loss (KD mix)", linewidth=1)
    evals = [r for r in log if "val_loss" in r]
    if evals:
        axis.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", label="held-out CE (student)")
    if any("val_kl" in r for r in evals):
        axis.plot([r["step"] for r in evals if "val_kl" in r], [r["val_kl"] for r in evals if "val_kl" in r], "s-",
                  label="held-out KL(teacher || student), T=1")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss (nats/token)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
