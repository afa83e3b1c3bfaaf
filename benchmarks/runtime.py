"""Our runtime against each backend's own generation loop, on the same artifact.

    python -m benchmarks.runtime PATH [PATH ...] [--json]

PATH: a GGUF file, an ONNX folder, or a build folder (its device-ready artifacts, from
manifest.json). Rows per artifact:

- GGUF: ``edgedistill`` (our loop over llama.cpp) and ``llama_cpp`` (llama-cpp-python's
  ``create_completion`` on the same ``Llama`` object, its cache reset before each call so
  neither side reuses the previous prompt).
- ONNX: ``edgedistill`` (our loop over onnxruntime), ``optimum``
  (``ORTModelForCausalLM.generate``) and ``onnxruntime_genai`` (0.15.2, given a
  ``genai_config.json`` that maps its inputs to the same ``model.onnx``).

Every implementation is measured the same way, as a black box, greedy, from identical
prompt token ids (so tokenizers cannot differ) with the same thread count, the runs of
all implementations interleaved (one of each per repeat), all loaded at once:
``ttft_s`` = median wall time of a 1-token generation (prefill + first token);
``prefill_tokens_per_s`` = prompt tokens / ttft; ``decode_tokens_per_s`` =
(generated - 1) / (median time of an N-token generation - ttft). Warm-up runs first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

from edgedistill.benchmarks.machine import machine_info
from edgedistill.runtime import Model, load

# Documentation prose, repeated as needed and cut to the requested prompt length in tokens.
PROMPT_TEXT = (
    "The pathlib module offers classes representing filesystem paths with semantics appropriate for different "
    "operating systems. Path classes are divided between pure paths, which provide purely computational operations "
    "without I/O, and concrete paths, which inherit from pure paths but also provide I/O operations. "
)


class Runner(ABC):
    """One implementation on one artifact: ``generate(ids, max_tokens)`` -> (tokens
    generated, their text), greedy. The text lets a test check that all agree."""

    impl = ""

    def __init__(self, path: Path, ours: Model, threads: int):
        self.ours = ours  # the artifact loaded once by our runtime; its tokenizer decodes ids where needed

    @abstractmethod
    def generate(self, prompt_ids: list[int], max_tokens: int) -> tuple[int, str]:
        """Greedy generation of up to ``max_tokens`` after ``prompt_ids``, from a clean cache."""

    def close(self) -> None:
        pass


class EdgedistillRunner(Runner):
    impl = "edgedistill"

    def generate(self, prompt_ids, max_tokens):
        completion = self.ours.generate(prompt_ids, max_tokens=max_tokens)
        return len(completion.tokens), completion.text


class LlamaCppRunner(Runner):
    """llama-cpp-python's own loop on the very ``Llama`` our backend decodes with (same
    weights in memory, same context and cache type)."""

    impl = "llama_cpp"

    def __init__(self, path: Path, ours: Model, threads: int):
        super().__init__(path, ours, threads)
        self.llm = ours.llm

    def generate(self, prompt_ids, max_tokens):
        self.llm.reset()  # no prefix reuse from the previous call: every call prefills the whole prompt
        result = self.llm.create_completion(prompt_ids, max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0)
        return result["usage"]["completion_tokens"], result["choices"][0]["text"]


class OptimumRunner(Runner):
    impl = "optimum"

    def __init__(self, path: Path, ours: Model, threads: int):
        import onnxruntime as ort
        import torch
        from optimum.onnxruntime import ORTModelForCausalLM

        super().__init__(path, ours, threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.model = ORTModelForCausalLM.from_pretrained(path, session_options=options, provider="CPUExecutionProvider")
        head_dim = getattr(self.model.config, "head_dim", None)
        if head_dim:  # optimum sizes its empty first cache as hidden/heads, wrong after head pruning (STACK.md)
            self.model.embed_size_per_head = head_dim
        self.torch, self.torch_threads = torch, torch.get_num_threads()
        torch.set_num_threads(threads)  # generate's own tensor work; a process-wide setting, restored on close

    def generate(self, prompt_ids, max_tokens):
        ids = self.torch.tensor([prompt_ids])
        output = self.model.generate(ids, attention_mask=self.torch.ones_like(ids), max_new_tokens=max_tokens,
                                     do_sample=False, pad_token_id=self.model.config.eos_token_id)
        new = [t for t in output[0, len(prompt_ids):].tolist() if t != self.ours.eos_token_id]
        return len(new), self.ours.decode(new)

    def close(self):
        self.torch.set_num_threads(self.torch_threads)


class GenaiRunner(Runner):
    """onnxruntime-genai over the same ``model.onnx``: a scratch folder links the files and
    adds the ``genai_config.json`` that names our graph's inputs and outputs."""

    impl = "onnxruntime_genai"

    def __init__(self, path: Path, ours: Model, threads: int):
        import onnxruntime_genai as og

        super().__init__(path, ours, threads)
        self.folder = Path(tempfile.mkdtemp(prefix="genai-"))
        for file in path.iterdir():
            (self.folder / file.name).symlink_to(file.resolve())
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        (self.folder / "genai_config.json").write_text(json.dumps(genai_config(config, threads)), encoding="utf-8")
        self.og = og
        self.model = og.Model(str(self.folder))

    def generate(self, prompt_ids, max_tokens):
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(prompt_ids) + max_tokens, do_sample=False)
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(prompt_ids)
        new = []
        while not generator.is_done():
            generator.generate_next_token()
            new.append(int(generator.get_next_tokens()[0]))
        new = [t for t in new if t != self.ours.eos_token_id]
        return len(new), self.ours.decode(new)

    def close(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def genai_config(config: dict, threads: int) -> dict:
    """onnxruntime-genai's description of an optimum-layout decoder (explicit KV in/out)."""
    heads = config["num_attention_heads"]
    return {
        "model": {
            "type": config["model_type"], "vocab_size": config["vocab_size"],
            "context_length": config["max_position_embeddings"], "bos_token_id": config.get("bos_token_id"),
            "eos_token_id": config.get("eos_token_id"), "pad_token_id": config.get("pad_token_id") or config.get("eos_token_id"),
            "decoder": {
                "filename": "model.onnx",
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": [], "intra_op_num_threads": threads},
                "head_size": config.get("head_dim") or config["hidden_size"] // heads, "hidden_size": config["hidden_size"],
                "num_attention_heads": heads, "num_hidden_layers": config["num_hidden_layers"],
                "num_key_value_heads": config.get("num_key_value_heads") or heads,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                           "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "max_length": config["max_position_embeddings"],
                   "min_length": 0, "past_present_share_buffer": False, "early_stopping": True, "length_penalty": 1.0,
                   "repetition_penalty": 1.0, "temperature": 1.0, "top_k": 1, "top_p": 1.0, "no_repeat_ngram_size": 0,
                   "diversity_penalty": 0.0},
    }


# format -> the implementations measured on it, ours first
RUNNERS: dict[str, list[Callable[[Path, Model, int], Runner]]] = {
    "gguf": [EdgedistillRunner, LlamaCppRunner],
    "onnx": [EdgedistillRunner, OptimumRunner, GenaiRunner],
}


def measure(runners: list[Runner], prompt_ids: list[int], decode_tokens: int, repeats: int, warmup: int) -> list[dict]:
    """Timings of every runner on one artifact, interleaved: each repeat runs every
    implementation once, in turn, so a slow spell of a shared machine hits all of them
    alike and their ratios stay meaningful."""
    def timed(runner: Runner, max_tokens: int) -> tuple[float, int, str]:
        started = time.perf_counter()
        generated, text = runner.generate(prompt_ids, max_tokens)
        return time.perf_counter() - started, generated, text

    for runner in runners:
        for _ in range(warmup):
            timed(runner, decode_tokens)
    first_token = {runner.impl: [] for runner in runners}
    whole = {runner.impl: [] for runner in runners}
    for _ in range(repeats):
        for runner in runners:
            # untimed first: the previous implementation's thread pools may still be spinning
            # (onnxruntime and ggml poll after a run) and the caches hold its weights
            timed(runner, 1)
            first_token[runner.impl].append(timed(runner, 1)[0])
            whole[runner.impl].append(timed(runner, decode_tokens))
    rows = []
    for runner in runners:
        ttft = statistics.median(first_token[runner.impl])
        total = statistics.median(t for t, _, _ in whole[runner.impl])
        generated = min(g for _, g, _ in whole[runner.impl])
        rows.append({
            "impl": runner.impl,
            "text": whole[runner.impl][0][2],
            "ttft_s": ttft,
            "prefill_tokens_per_s": len(prompt_ids) / ttft,
            "decode_tokens_per_s": (generated - 1) / (total - ttft) if generated > 1 and total > ttft else 0.0,
            "prompt_tokens": len(prompt_ids),
            "generated_tokens": generated,
        })
    return rows


def prompt_ids_for(model: Model, prompt_tokens: int) -> list[int]:
    ids = model.encode(PROMPT_TEXT)
    while len(ids) < prompt_tokens:
        ids = ids + ids
    return ids[:prompt_tokens]


def artifacts(path: Path) -> list[tuple[str, Path, str]]:
    """(name, path, format) of each artifact PATH names; a build folder gives its device-ready ones."""
    from edgedistill.runtime import detect_format

    manifest = path / "manifest.json"
    if path.is_dir() and manifest.is_file():
        entries = json.loads(manifest.read_text(encoding="utf-8"))["artifacts"]
        return [(e["name"], path / e["path"], e["format"]) for e in entries if e.get("device_ready") and e["format"] in RUNNERS]
    return [(path.name, path, detect_format(path))]


def run(paths: list[Path], decode_tokens: int, prompt_tokens: int, repeats: int, warmup: int, threads: int,
        skip: set[str]) -> list[dict]:
    rows = []
    for name, path, fmt in (a for p in paths for a in artifacts(p)):
        ours = load(path, threads=threads)
        prompt_ids = prompt_ids_for(ours, prompt_tokens)
        runners: list[Runner] = []
        try:
            for make in RUNNERS[fmt]:
                if make.impl not in skip:
                    runners.append(make(path, ours, threads))
            for row in measure(runners, prompt_ids, decode_tokens, repeats, warmup):
                rows.append({"artifact": name, "backend": fmt, **row})
        finally:
            for runner in runners:
                runner.close()
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    """Ours / theirs for decode and prefill speed and TTFT, per artifact."""
    out = []
    for ours in (r for r in rows if r["impl"] == "edgedistill"):
        for theirs in (r for r in rows if r["artifact"] == ours["artifact"] and r["impl"] != "edgedistill"):
            out.append({"artifact": ours["artifact"], "vs": theirs["impl"],
                        "decode_speed_ratio": ours["decode_tokens_per_s"] / theirs["decode_tokens_per_s"],
                        "prefill_speed_ratio": ours["prefill_tokens_per_s"] / theirs["prefill_tokens_per_s"],
                        "ttft_ratio": ours["ttft_s"] / theirs["ttft_s"]})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="GGUF files, ONNX folders or build folders")
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip", action="append", default=[], help="leave out an implementation (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    for path in args.paths:
        if not path.exists():
            parser.error(f"{path} does not exist")
    rows = run(args.paths, args.decode_tokens, args.prompt_tokens, args.repeats, args.warmup, args.threads, set(args.skip))
    result = {"rows": rows, "ratios": ratios(rows), "machine": machine_info(), "threads": args.threads,
              "settings": {"decode_tokens": args.decode_tokens, "prompt_tokens": args.prompt_tokens,
                           "repeats": args.repeats, "warmup": args.warmup}}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'artifact':<14} {'impl':<18} {'decode tok/s':>12} {'prefill tok/s':>13} {'TTFT ms':>8} {'tokens':>6}")
    for row in rows:
        print(f"{row['artifact']:<14} {row['impl']:<18} {row['decode_tokens_per_s']:>12.1f} "
              f"{row['prefill_tokens_per_s']:>13.1f} {row['ttft_s'] * 1000:>8.2f} {row['generated_tokens']:>6}")
    for ratio in result["ratios"]:
        print(f"{ratio['artifact']}: edgedistill / {ratio['vs']}: decode x{ratio['decode_speed_ratio']:.3f}, "
              f"prefill x{ratio['prefill_speed_ratio']:.3f}, TTFT x{ratio['ttft_ratio']:.3f}")
    print(f"machine: {result['machine']['cpu']}, {args.threads} threads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
