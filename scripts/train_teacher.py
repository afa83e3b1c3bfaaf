"""Train the docs-assistant demo teacher on the committed Python-documentation corpus.

A Llama-architecture model with GQA (hidden 512 = 2 x 256, so GGUF k-quants apply to it
and to a half-width student; 8 query / 2 KV heads of 64; 6 layers; MLP 1536; tied
embeddings; byte-level BPE with 8192 tokens), trained from scratch on the train split on
CPU with bf16 autocast (AMX/AVX512-BF16 make it ~2x faster than fp32 on 2 cores; master
weights, optimizer state and the saved model stay fp32/fp16).

``--steps auto`` times the first steps and picks the step count that fits ``--minutes``;
the chosen number is written to the model card so the run can be repeated exactly with
``--steps N``. Output (committed under ``edgedistill/demo/teacher/``): fp16 safetensors,
config, tokenizer, generation config, ``training_log.jsonl`` and a model card (README.md)
with the command, data, steps, wall time, held-out test perplexity and top-1 accuracy next
to a unigram baseline, and sample generations.

Run: ``python -m scripts.train_teacher [--minutes 75] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

from edgedistill import demo

DEMO = Path(demo.__file__).parent  # what these tools write ships in the package
OUTPUT = DEMO / "teacher"
VOCAB_SIZE = 8192
ARCHITECTURE = {
    "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 6,
    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64,
    "max_position_embeddings": 512, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}
SAMPLE_PROMPTS = (
    "The json module",
    "Why are Python strings immutable?\n\n",
    ">>> import os\n>>> os.path.",
    "class collections.OrderedDict",
    "To read a file line by line,",
)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--steps", default="auto", help="optimizer steps, or 'auto' to fit --minutes")
    parser.add_argument("--minutes", type=float, default=75.0, help="training time budget for --steps auto")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-bf16", action="store_true", help="train in fp32 (slower on CPUs with bf16 units)")
    return parser.parse_args(argv)


def build_model(tokenizer, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **ARCHITECTURE,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def unigram_baseline(train_stream: list[int], windows, vocab_size: int) -> dict:
    """Add-one-smoothed unigram model from train counts, scored on the same targets as score_windows()."""
    counts = Counter(train_stream)
    total = len(train_stream) + vocab_size
    targets = windows[:, 1:].reshape(-1).tolist()
    nll = -sum(math.log((counts.get(t, 0) + 1) / total) for t in targets) / len(targets)
    most_common = counts.most_common(1)[0][0]
    return {"ppl": math.exp(nll), "top1": sum(t == most_common for t in targets) / len(targets)}


def sample(model, tokenizer, prompt: str, max_new_tokens: int = 60) -> str:
    import torch

    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    model.eval()
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, repetition_penalty=1.1,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def train(args) -> dict:
    import torch
    from safetensors.torch import save_file  # noqa: F401  (save_pretrained uses it)
    from transformers import GenerationConfig

    from edgedistill.demo import pydocs
    from edgedistill.demo.tiny import train_tokenizer
    from edgedistill.data import token_stream, windows
    from edgedistill.pipeline.distill.lr_schedule import warmup_then_decay
    from edgedistill.pipeline.evaluate import score_windows

    torch.set_num_threads(args.threads)
    started = time.time()
    train_texts = pydocs.texts("train")
    tokenizer = train_tokenizer(train_texts, vocab_size=VOCAB_SIZE)
    train_stream = token_stream(train_texts, tokenizer)
    validation = windows(token_stream(pydocs.texts("validation"), tokenizer), args.seq_len, limit=48)
    test = windows(token_stream(pydocs.texts("test"), tokenizer), args.seq_len)
    print(f"train tokens {len(train_stream):,}  validation windows {len(validation)}  test windows {len(test)}", flush=True)

    model = build_model(tokenizer, args.seed).train()
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    bf16 = not args.no_bf16
    generator = torch.Generator().manual_seed(args.seed)
    stream = torch.tensor(train_stream, dtype=torch.long)
    tokens_per_step = args.batch_size * args.seq_len

    def epoch_batches():
        # Each epoch cuts the stream at a fresh random offset, so windows do not repeat exactly.
        while True:
            offset = int(torch.randint(0, args.seq_len, (1,), generator=generator))
            count = (len(stream) - offset) // args.seq_len
            epoch = stream[offset: offset + count * args.seq_len].view(count, args.seq_len)
            epoch = epoch[torch.randperm(count, generator=generator)]
            for start in range(0, count - args.batch_size + 1, args.batch_size):
                yield epoch[start: start + args.batch_size]

    batches = epoch_batches()
    total_steps = None if args.steps == "auto" else int(args.steps)
    probe_steps = 20
    log_path = args.out / "training_log.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w", encoding="utf-8")
    train_started = time.time()
    step, loss_ema = 0, None
    while total_steps is None or step < total_steps:
        if total_steps is None and step == probe_steps:
            per_step = (time.time() - train_started) / probe_steps
            # Leave ~8% of the budget for periodic and final evaluation.
            total_steps = int(args.minutes * 60 * 0.92 / per_step)
            print(f"{per_step:.2f} s/step -> {total_steps} steps for {args.minutes} min", flush=True)
        lr = warmup_then_decay(step, total_steps or 10**9, args.lr, args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = next(batches)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        record = {"step": step, "loss": round(loss.item(), 4), "lr": lr, "grad_norm": round(grad_norm, 3),
                  "tokens": step * tokens_per_step, "seconds": round(time.time() - train_started, 1)}
        if step % args.eval_every == 0 or step == total_steps:
            record["validation"] = score_windows(model, validation, bf16=bf16)
            print(f"step {step}/{total_steps} loss~{loss_ema:.3f} val ppl {record['validation']['ppl']:.2f} "
                  f"top1 {record['validation']['top1']:.3f} {record['seconds']:.0f}s", flush=True)
        log.write(json.dumps(record) + "\n")
        log.flush()
    log.close()
    train_seconds = time.time() - train_started

    model.eval()
    test_metrics = score_windows(model, test)  # fp32, as the build evaluates it
    final_validation = score_windows(model, validation)
    baseline = unigram_baseline(train_stream, test, len(tokenizer))
    samples = {prompt: sample(model, tokenizer, prompt) for prompt in SAMPLE_PROMPTS}
    model.to(torch.float16).save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id, do_sample=True, temperature=0.7, top_p=0.9,
                     repetition_penalty=1.1, max_new_tokens=128).save_pretrained(args.out)
    summary = {
        "params": params, "steps": total_steps, "tokens_per_step": tokens_per_step,
        "tokens_seen": total_steps * tokens_per_step, "train_tokens": len(train_stream),
        "epochs": round(total_steps * tokens_per_step / len(train_stream), 2),
        "train_seconds": round(train_seconds, 1), "total_seconds": round(time.time() - started, 1),
        "test": test_metrics, "unigram_test": baseline, "final_validation": final_validation,
        "bf16_autocast": bf16, "threads": args.threads, "machine": _machine(),
        "command": "python -m scripts.train_teacher " + " ".join(
            shlex.quote(a) for a in _repeatable_argv(args, total_steps)),
        "samples": samples,
    }
    (args.out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (args.out / "README.md").write_text(model_card(summary, args), encoding="utf-8")
    return summary


def _repeatable_argv(args, steps: int) -> list[str]:
    argv = ["--steps", str(steps), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
            "--lr", str(args.lr), "--warmup", str(args.warmup), "--weight-decay", str(args.weight_decay),
            "--seed", str(args.seed), "--threads", str(args.threads)]
    return argv + (["--no-bf16"] if args.no_bf16 else [])


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"


def model_card(summary: dict, args) -> str:
    test, unigram = summary["test"], summary["unigram_test"]
    arch = ", ".join(f"{k}={v}" for k, v in ARCHITECTURE.items())
    samples = "\n\n".join(
        f"**Prompt** `{json.dumps(prompt)}` (greedy, repetition penalty 1.1, 60 tokens):\n\n```text\n{prompt}{text}\n```"
        for prompt, text in summary["samples"].items()
    )
    return f"""---
license: psf-2.0
library_name: transformers
tags: [edgedistill, demo-teacher, llama]
---

# edgedistill docs-assistant demo teacher

A {summary['params'] / 1e6:.1f}M-parameter Llama-architecture model (GQA) trained from scratch by
this repository on the Python 3.11 documentation (reST sources from Debian's
`python3.11-doc`, PSF licence), as the teacher of the embedded `docs-assistant` recipe.
It is a demo model: it writes documentation-like text, it is not a reliable assistant.

- Architecture: `LlamaForCausalLM`, {arch}, vocab {VOCAB_SIZE} (byte-level BPE,
  GPT-2 pre-tokenizer, `<|bos|>` `<|eos|>` `<|pad|>`; no BOS is added automatically).
- Data: `edgedistill/demo/data/pydocs/train.jsonl.gz` ({summary['train_tokens']:,} tokens); documents
  joined by EOS, packed into {args.seq_len}-token windows re-cut at a random offset each epoch.
  Validation and test documents (split by document) were never trained on.
- Training: {summary['steps']} steps x {summary['tokens_per_step']} tokens = {summary['tokens_seen']:,} tokens
  ({summary['epochs']} epochs), AdamW (betas 0.9/0.95, weight decay {args.weight_decay} on matrices), peak lr
  {args.lr}, {args.warmup} warmup steps, cosine to 10%, grad clip 1.0, bf16 autocast: {summary['bf16_autocast']}.
- Wall time: {summary['train_seconds'] / 60:.1f} min training, {summary['total_seconds'] / 60:.1f} min in total,
  on {summary['machine']} ({summary['threads']} threads).
- Weights saved in fp16 (`model.safetensors`); the loss curve is in `training_log.jsonl`.

## Command

```bash
{summary['command']} --out edgedistill/demo/teacher
```

## Held-out test split (fp32, {test['tokens']:,} next-token predictions in {args.seq_len}-token windows)

| model | perplexity | top-1 accuracy |
|---|---|---|
| this teacher | {test['ppl']:.2f} | {test['top1']:.3f} |
| unigram (add-one, train counts) | {unigram['ppl']:.2f} | {unigram['top1']:.3f} |

Final validation perplexity: {summary['final_validation']['ppl']:.2f} (top-1 {summary['final_validation']['top1']:.3f}).

## Sample generations

{samples}
"""


def main(argv=None) -> int:
    args = parse_args(argv)
    summary = train(args)
    print(json.dumps({k: summary[k] for k in ("params", "steps", "train_seconds", "test", "unigram_test")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
