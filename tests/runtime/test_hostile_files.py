"""Damaged and hostile artifacts never crash anything: each is either run or refused with
one ValueError line naming the file, within bounded memory (seeded fuzz over real GGUF,
ONNX and safetensors exports of the tiny model, through load, generate and the verify
stage's parity gate), and the CLI (generate, serve start-up) turns that into exit 2."""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from edgedistill.runtime.gguf_metadata import GGML_BLOCKS, check_gguf, read_gguf_metadata

SEED = 20261207
PEAK_RSS_LIMIT_MIB = 2048  # torch + onnxruntime + llama.cpp loaded: ~700 MiB; a header's multi-GB claim would blow it
HUGE = (2**64 - 1, 2**63, 2**40, 2**32 + 7)


def gguf_length_fields(path: Path) -> tuple[list[int], int]:
    """Offsets of every u64 count/length in a GGUF header, and where the header ends
    (a walk written apart from the runtime's reader, so the test does not trust it)."""
    data = path.read_bytes()
    pos, fields = 8, []
    tensors, keys = struct.unpack_from("<QQ", data, pos)
    fields += [pos, pos + 8]
    pos += 16
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def string(pos):
        fields.append(pos)
        return pos + 8 + struct.unpack_from("<Q", data, pos)[0]

    for _ in range(keys):
        pos = string(pos)
        (kind,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if kind == 8:
            pos = string(pos)
        elif kind == 9:
            item, count = struct.unpack_from("<IQ", data, pos)
            fields.append(pos + 4)
            pos += 12
            for _ in range(count):
                pos = string(pos) if item == 8 else pos + sizes[item]
        else:
            pos += sizes[kind]
    for _ in range(tensors):
        pos = string(pos)
        (dims,) = struct.unpack_from("<I", data, pos)
        fields += [pos + 4 + 8 * d for d in range(dims)]
        pos += 4 + 8 * dims + 4 + 8
    return fields, pos


def _write(target: Path, data: bytes) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def gguf_cases(source: Path, root: Path, rng: random.Random, count: int) -> list[dict]:
    data = source.read_bytes()
    fields, header_end = gguf_length_fields(source)
    cases = []
    for index in range(count):
        kind = ("truncate", "flip", "huge")[index % 3]
        mutated = bytearray(data)
        if kind == "truncate":  # half inside the header, half inside the tensor data
            cut = rng.randrange(4, header_end) if index % 2 else rng.randrange(header_end, len(data))
            mutated = mutated[:cut]
        elif kind == "flip":
            for _ in range(rng.randint(1, 8)):
                mutated[rng.randrange(4, header_end)] ^= 1 << rng.randrange(8)
        else:
            struct.pack_into("<Q", mutated, rng.choice(fields), rng.choice(HUGE))
        path = _write(root / f"gguf-{index:03d}" / "model.gguf", bytes(mutated))
        cases.append({"id": f"gguf-{index:03d}-{kind}", "path": str(path), "kind": kind, "verify": ["gguf", "f16"]})
    return cases


def folder_cases(source: Path, root: Path, rng: random.Random, prefix: str, weights: str, count: int) -> list[dict]:
    """Copies of a model folder with one file damaged: the weights (truncated, flipped,
    for safetensors a huge header length), config.json or tokenizer.json."""
    cases = []
    for index in range(count):
        folder = root / f"{prefix}-{index:03d}"
        shutil.copytree(source, folder)
        victim = [weights, weights, weights, "config.json", "tokenizer.json"][index % 5]
        data = bytearray((folder / victim).read_bytes())
        how = rng.choice(["truncate", "flip", "huge"] if victim == "model.safetensors" else ["truncate", "flip"])
        if how == "truncate":
            data = data[:rng.randrange(0, len(data))]
        elif how == "flip":
            span = min(len(data), 4096)  # headers, graph structure and JSON syntax live near the start
            for _ in range(rng.randint(1, 16)):
                data[rng.randrange(span)] ^= 1 << rng.randrange(8)
        else:
            struct.pack_into("<Q", data, 0, rng.choice(HUGE))
        (folder / victim).write_bytes(bytes(data))
        case = {"id": f"{prefix}-{index:03d}-{victim}-{how}", "path": str(folder), "kind": how, "victim": victim}
        cases.append({**case, "verify": ["onnx", "fp32"]} if prefix == "onnx" else case)
    return cases


@pytest.fixture(scope="module")
def artifacts(tiny_llama_dir, tmp_path_factory):
    from edgedistill.exporters.gguf import export_gguf
    from edgedistill.exporters.onnx import export_onnx

    root = tmp_path_factory.mktemp("hostile-sources")
    export_gguf(tiny_llama_dir, root / "model.gguf", "f16")
    export_onnx(tiny_llama_dir, root / "onnx", "fp32")
    return {"gguf": root / "model.gguf", "onnx": root / "onnx", "hf": tiny_llama_dir}


def test_the_size_table_is_gguf_pys():
    from gguf.constants import GGML_QUANT_SIZES

    assert GGML_BLOCKS == {int(kind): size for kind, size in GGML_QUANT_SIZES.items()}


def test_an_intact_export_passes_the_header_check(artifacts):
    check_gguf(artifacts["gguf"])
    assert read_gguf_metadata(artifacts["gguf"], {"general.architecture"}) == {"general.architecture": "llama"}


@pytest.mark.slow
def test_two_hundred_damaged_artifacts_are_run_or_refused_in_one_line(artifacts, tmp_path):
    rng = random.Random(SEED)
    cases = (gguf_cases(artifacts["gguf"], tmp_path, rng, 120)
             + folder_cases(artifacts["onnx"], tmp_path, rng, "onnx", "model.onnx", 60)
             + folder_cases(artifacts["hf"], tmp_path, rng, "hf", "model.safetensors", 30))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    out = tmp_path / "outcomes.jsonl"
    worker = subprocess.run([sys.executable, "-m", "tests.runtime.hostile_worker", str(tmp_path / "cases.json"), str(out),
                             str(artifacts["hf"])], capture_output=True, text=True, timeout=1200, cwd=Path(__file__).parents[2])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    started = [line["started"] for line in lines if "started" in line]
    assert worker.returncode == 0, f"the runtime process died in case {started[-1]}: {worker.stderr[-2000:]}"
    outcomes = {line["id"]: line for line in lines if "outcome" in line}
    assert len(outcomes) == len(cases) >= 200
    by_id = {case["id"]: case for case in cases}
    for case_id, result in outcomes.items():
        assert result["outcome"] in ("ok", "ValueError"), (case_id, result)
        if result["outcome"] == "ValueError":
            assert "\n" not in result["message"] and len(result["message"]) < 600, (case_id, result["message"])
            assert by_id[case_id]["path"] in result["message"], (case_id, result["message"])  # names the artifact
    verified = {case_id: result["verify"] for case_id, result in outcomes.items() if "verify" in result}
    assert len(verified) == 180
    for case_id, verdict in verified.items():  # the gate runs to a verdict: it never raises on a damaged file
        assert verdict["outcome"] == "ok", (case_id, verdict)
        if outcomes[case_id]["outcome"] != "ok":  # what the runtime refuses, the gate fails with that reason
            assert verdict["device_ready"] is False and "the runtime cannot load it" in verdict["failures"][0]
    truncated_gguf = [i for i, case in by_id.items() if i.startswith("gguf") and case["kind"] == "truncate"]
    assert all(outcomes[i]["outcome"] == "ValueError" for i in truncated_gguf)  # a short file is never run
    refused = sum(result["outcome"] != "ok" for result in outcomes.values())
    gated = sum(not verdict["device_ready"] for verdict in verified.values())
    print(f"{len(cases)} damaged artifacts: {refused} refused in one line, {len(cases) - refused} ran; "
          f"the parity gate failed {gated} of {len(verified)} exports; peak RSS {lines[-1]['peak_rss_mib']:.0f} MiB")
    assert refused > len(cases) // 2, "the mutations barely damaged anything: the fuzz would prove nothing"
    assert lines[-1]["peak_rss_mib"] < PEAK_RSS_LIMIT_MIB


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgedistill.cli", *args], capture_output=True, text=True, timeout=300)


def test_damaged_files_and_bad_ports_are_one_line_and_exit_2_from_the_cli(artifacts, tmp_path):
    data = artifacts["gguf"].read_bytes()
    _, header_end = gguf_length_fields(artifacts["gguf"])
    short = _write(tmp_path / "short.gguf", data[:header_end // 2])
    huge = bytearray(data)
    struct.pack_into("<Q", huge, 24, 2**40)  # the first key name's length: a 1 TiB string
    huge_name = _write(tmp_path / "huge.gguf", bytes(huge))
    onnx = tmp_path / "onnx"
    shutil.copytree(artifacts["onnx"], onnx)
    (onnx / "model.onnx").write_bytes((onnx / "model.onnx").read_bytes()[:1000])
    for args, message in [
        (["generate", str(short), "Hi"], "short.gguf is a damaged GGUF file"),
        (["generate", str(huge_name), "Hi"], "a key name claims 1,099,511,627,776 items"),
        (["generate", str(onnx), "Hi"], "cannot be loaded by the onnx backend"),
        (["serve", str(artifacts["gguf"]), "--port", "99999"], "'--port'"),
        (["generate", str(artifacts["gguf"]), "Hi", "--threads", "0"], "--threads"),
    ]:
        result = _cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def _serve_start(path: str, timeout_s: float = 120.0) -> tuple[str, str]:
    """Start ``edgedistill serve PATH --port 0``: ("serving", "") once it announces its
    address (then stopped with SIGTERM, which must exit 0), or ("exit N", stderr) when it
    exits first."""
    import select
    import signal

    process = subprocess.Popen([sys.executable, "-m", "edgedistill.cli", "serve", path, "--port", "0", "--threads", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], timeout_s)
        assert ready, f"serve {path} neither announced an address nor exited in {timeout_s:.0f} s"
        line = process.stdout.readline()  # the announcement, or "" when the process ends
        if line.startswith("serving "):
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, process.stderr.read()[-2000:]
            return "serving", ""
        process.wait(timeout=60)
        return f"exit {process.returncode}", process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_serve_starts_on_what_loads_and_refuses_the_rest_in_one_line(artifacts, tmp_path):
    rng = random.Random(SEED + 1)
    cases = (gguf_cases(artifacts["gguf"], tmp_path, rng, 6) + folder_cases(artifacts["onnx"], tmp_path, rng, "onnx",
                                                                             "model.onnx", 5)
             + folder_cases(artifacts["hf"], tmp_path, rng, "hf", "model.safetensors", 5))
    intact = {name: _serve_start(str(artifacts[name])) for name in ("gguf", "onnx", "hf")}
    assert all(outcome == ("serving", "") for outcome in intact.values()), intact  # the control: intact files serve
    outcomes = {case["id"]: _serve_start(case["path"]) for case in cases}
    for case_id, (outcome, stderr) in outcomes.items():
        assert outcome in ("serving", "exit 2"), (case_id, outcome, stderr[-2000:])
        if outcome == "exit 2":
            assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, (case_id, stderr)
    refused = sum(outcome == "exit 2" for outcome, _ in outcomes.values())
    print(f"serve on {len(cases)} damaged artifacts: {refused} refused in one line (exit 2), {len(cases) - refused} served")
    assert refused >= len(cases) // 3, outcomes
