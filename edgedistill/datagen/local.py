"""The teacher as a local HF folder, run in this process: prompts answered in batches
with ``generate`` (left padding), each generated token kept with its id, its log-softmax
at T = 1 of the raw logits, and the ``top_logprobs`` most likely alternatives, the same
row shape as the API path plus token ids (so training needs no text-to-id mapping).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgedistill.datagen.api import Sampling
from edgedistill.datagen.store import Progress, Request, Writer, answered_ids
from edgedistill.errors import UserError


class LocalTeacher:
    """A loaded HF causal LM and its tokenizer, answering prompt batches."""

    def __init__(self, model_dir: Path, device: str | None = None):
        import torch

        from edgedistill.hf import load_model, load_tokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(model_dir).to(self.device)
        self.tokenizer = load_tokenizer(model_dir)
        self.eos = self.tokenizer.eos_token_id
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos
        self.context = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 30)
        self.vocab = min(len(self.tokenizer), self.model.get_output_embeddings().out_features)
        self._texts: dict[int, str] = {}

    def prompt_ids(self, row: dict) -> list[int]:
        """The prompt's ids, opening with BOS where the tokenizer adds one (Gemma 3 without it
        at position 0 degenerates: 27 of 32 continuations of docs text were one token repeated)."""
        from edgedistill.data import window_bos

        if "prompt" in row:
            ids = self.tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        elif not self.tokenizer.chat_template:
            raise UserError("chat 'messages' prompts need a teacher with a chat template; give 'prompt' rows instead")
        else:
            text = self.tokenizer.apply_chat_template(row["messages"], add_generation_prompt=True, tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = window_bos(self.tokenizer)
        return ids if bos is None or ids[:1] == [bos] else [bos, *ids]

    def token_text(self, token: int) -> str:
        if token not in self._texts:
            self._texts[token] = self.tokenizer.decode([token])
        return self._texts[token]

    def _scores(self, step_logits, generated, k: int):
        """Per generation step, from the raw logits at T = 1 (one (B, V) step at a time, never
        (B, T, V)): the generated token's logprob (B, T), top-k ids and logprobs (B, T, k)."""
        import torch

        own, top_ids, top_lps = [], [], []
        for step, logits in enumerate(step_logits):
            logprobs = logits[:, :self.vocab].float().log_softmax(-1).cpu()  # (B, V)
            own.append(logprobs.gather(1, generated[:, step:step + 1].clamp(max=self.vocab - 1)).squeeze(1))
            best = logprobs.topk(k)
            top_ids.append(best.indices)
            top_lps.append(best.values)
        return torch.stack(own, 1), torch.stack(top_ids, 1), torch.stack(top_lps, 1)

    def answer(self, prompts: list[list[int]], sampling: Sampling, seed: int = 0) -> list[dict]:
        """One batch: per prompt ``{response, finish_reason, usage, logprobs}`` (see module)."""
        import torch

        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):  # left padding: every prompt ends where generation starts
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        torch.manual_seed(seed)
        sample = sampling.temperature > 0
        k = min(sampling.top_logprobs, self.vocab)
        with torch.no_grad():
            out = self.model.generate(
                ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=sampling.max_tokens,
                do_sample=sample, temperature=sampling.temperature if sample else None, top_k=0 if sample else None,
                top_p=1.0 if sample else None, pad_token_id=self.pad, eos_token_id=self.eos,
                return_dict_in_generate=True, output_logits=k > 0)
        generated = out.sequences[:, width:].cpu()
        scored = self._scores(out.logits, generated, k) if k else None  # per step: (token logprob, top ids, top logprobs)
        rows = []
        for row, prompt in enumerate(prompts):
            tokens = generated[row].tolist()
            stop = tokens.index(self.eos) if self.eos in tokens else None
            tokens = tokens[:stop] if stop is not None else tokens
            entries = []
            for step, token in enumerate(tokens + ([self.eos] if stop is not None else [])) if k else ():
                own, top_ids, top_lps = scored[0][row, step], scored[1][row, step], scored[2][row, step]
                entries.append({"token": self.token_text(token), "id": token, "logprob": float(own),
                                "top": [[self.token_text(t), lp, t] for t, lp in zip(top_ids.tolist(), top_lps.tolist())]})
            rows.append({"response": self.tokenizer.decode(tokens), "finish_reason": "stop" if stop is not None else "length",
                         "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(tokens)},
                         **({"logprobs": entries} if k else {})})
        return rows


def generate(requests: list[Request], out: Path, teacher: LocalTeacher | None, sampling: Sampling = Sampling(),
             batch_size: int = 16, finish: Callable[[dict], dict] = lambda row: row,
             on_row: Callable[[Progress], None] = lambda progress: None) -> Progress:
    """Answer every request not yet in ``out`` in batches of ``batch_size`` (rows of a batch
    are written when the batch is done; a kill loses at most that batch). The stop at EOS
    is kept as a last logprobs entry (its id is EOS), so training can learn where the
    teacher stops. ``teacher`` may be None when every request is already answered."""
    done = answered_ids(out)
    todo = [r for r in requests if r.id not in done]
    progress = Progress(total=len(requests), skipped=len(requests) - len(todo))
    if not todo:
        return progress
    budget = teacher.context - sampling.max_tokens
    writer = Writer(out)
    try:
        for start in range(0, len(todo), batch_size):
            batch, prompts = [], []
            for request in todo[start:start + batch_size]:
                ids = teacher.prompt_ids(request.row)
                if not 0 < len(ids) <= budget:
                    progress.failed.append(f"{request.id}: prompt of {len(ids)} tokens does not leave max_tokens="
                                           f"{sampling.max_tokens} in the teacher's context of {teacher.context}")
                    continue
                batch.append(request)
                prompts.append(ids)
            if not batch:
                continue
            seed = (sampling.seed or 0) * 1_000_003 + start
            for request, answer in zip(batch, teacher.answer(prompts, sampling, seed)):
                row = finish({"id": request.id, **request.row, **answer})
                writer.write(row)
                progress.answered += 1
                progress.kept += int(row.get("kept", True))
                progress.prompt_tokens += answer["usage"]["prompt_tokens"]
                progress.completion_tokens += answer["usage"]["completion_tokens"]
                on_row(progress)
    finally:
        writer.close()
    return progress
