"""Bench stage: decode speed and size of every exported artifact, with the machine recorded."""

from __future__ import annotations

from pathlib import Path

from edgedistill.artifacts import Artifact, atomic_write_json, is_under, record_files

OUTPUTS = ("bench",)


def metric_name(artifact_name: str, quantity: str) -> str:
    """Stable snake_case manifest metric, e.g. ``decode_tokens_per_s_gguf_f16``."""
    return f"{quantity}_{artifact_name.replace('-', '_')}"


def run(cfg: dict, inp: Artifact, out_dir: Path) -> Artifact:
    """cfg: {"bench": BenchConfig}."""
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
    (out_dir / "bench").mkdir(parents=True)
    results = {"machine": machine_info(), "config": {"decode_tokens": bench_cfg.decode_tokens, "repeats": bench_cfg.repeats}, "artifacts": rows}
    atomic_write_json(out_dir / "bench" / "results.json", results)
    return Artifact("bench", out_dir, record_files(out_dir, ["bench"]), {"artifacts": rows}, metrics, inp)
