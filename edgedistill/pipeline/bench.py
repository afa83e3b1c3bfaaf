"""Bench stage: decode speed and size of every exported artifact, with the machine recorded,
and the held-out quality of teacher and student (test split and QA set, see evaluate.py)."""

from __future__ import annotations

from pathlib import Path

from edgedistill.artifacts import Artifact, atomic_write_json, is_under, record_files

OUTPUTS = ("bench",)


def metric_name(artifact_name: str, quantity: str) -> str:
    """Stable snake_case manifest metric, e.g. ``decode_tokens_per_s_gguf_f16``."""
    return f"{quantity}_{artifact_name.replace('-', '_')}"


def evaluate_quality(bench_cfg, seq_len: int, inp: Artifact) -> dict:
    """Test-split and QA metrics of the distilled student against its teacher (torch, fp32)."""
    from edgedistill.hf import load_model, load_tokenizer
    from edgedistill.pipeline.data import eval_windows
    from edgedistill.pipeline.evaluate import load_qa_pairs, quality_report

    student_dir, teacher_dir = inp.find("distill").model_dir, inp.find("teacher").model_dir
    tokenizer = load_tokenizer(student_dir)
    windows = eval_windows(bench_cfg.eval_path, tokenizer, seq_len, bench_cfg.eval_windows) if bench_cfg.eval_path else None
    pairs = load_qa_pairs(bench_cfg.qa_path, bench_cfg.qa_pairs) if bench_cfg.qa_path else None
    return quality_report(load_model(student_dir), load_model(teacher_dir), tokenizer, windows, pairs, seq_len)


def run(cfg: dict, inp: Artifact, out_dir: Path) -> Artifact:
    """cfg: {"bench": BenchConfig, "seq_len": data.seq_len, "eval_content": hashes of eval data}."""
    from edgedistill.benchmarks.decode import measure_decode
    from edgedistill.benchmarks.machine import machine_info

    bench_cfg = cfg["bench"]
    export = inp.find("export")
    rows, metrics = [], {}
    for entry in export.payload["exports"]:
        path = export.root / entry["path"]
        size = sum(f.bytes for f in export.files if is_under(f.path, entry["path"]))
        speed = measure_decode(path, bench_cfg.decode_tokens, bench_cfg.repeats, bench_cfg.warmup)
        rows.append({"name": entry["name"], "format": entry["format"], "quantization": entry["quantization"], "bytes": size, **speed})
        metrics[metric_name(entry["name"], "decode_tokens_per_s")] = speed["decode_tokens_per_s"]
        metrics[metric_name(entry["name"], "bytes")] = size
    quality = {}
    if bench_cfg.eval_path or bench_cfg.qa_path:
        quality = evaluate_quality(bench_cfg, cfg["seq_len"], inp)
        metrics.update(quality)
    (out_dir / "bench").mkdir(parents=True)
    results = {"machine": machine_info(), "config": {"decode_tokens": bench_cfg.decode_tokens, "repeats": bench_cfg.repeats},
               "artifacts": rows, "quality": quality}
    atomic_write_json(out_dir / "bench" / "results.json", results)
    return Artifact("bench", out_dir, record_files(out_dir, ["bench"]), {"artifacts": rows}, metrics, inp)
