"""`edgedistill bench` end to end on the tiny recipe: the teacher served over HTTP by
`edgedistill serve` (torch backend), every artifact served too, real numbers checked for
presence, sign and consistency; a teacher API that is down or failing; two builds compared."""

import json
import shutil
import statistics
import subprocess
import sys

import pytest

from edgedistill.benchmarks.cost import HOURS_PER_MONTH
from edgedistill.benchmarks.suite import ENTRY_KEYS
from tests.benchmarks.fake_api import closed_port, fixed_answer_api

pytestmark = pytest.mark.slow

DECODE_TOKENS = 8
FAST = ["distill.steps=5", "export.onnx=[fp32]", "export.gguf=[f16]", "bench.probe_questions=3", "bench.latency_prompts=2",
        "bench.repeats=2", f"bench.decode_tokens={DECODE_TOKENS}", "bench.answer_tokens=12", "bench.artifact_eval_windows=2"]
POSITIVE = ("bytes", "params", "load_s", "peak_rss_bytes", "ttft_p50_s", "ttft_p95_s", "ttft_p99_s", "tpot_p50_s", "tpot_p95_s",
            "e2e_p50_s", "e2e_p95_s", "e2e_p99_s", "decode_tokens_per_s", "prefill_tokens_per_s", "perplexity",
            "top1_agreement", "retention", "usd_per_1m_tokens", "usd_per_1m_input_tokens", "usd_per_1m_output_tokens",
            "usd_per_month")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgedistill.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=900)


def results_of(build_dir):
    return json.loads((build_dir / "bench" / "results.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny"
    sets = [arg for setting in FAST for arg in ("--set", setting)]
    result = cli("build", "tiny", "--out", out, *sets)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_every_figure_is_present_positive_and_consistent(built):
    out, result = built
    results = results_of(out)
    entries = [results["teacher"], *results["artifacts"]]
    assert [e["name"] for e in entries] == ["teacher", "onnx-fp32", "gguf-f16"]
    assert results["teacher"]["format"] == "hf" and "torch" in results["teacher"]["served_by"]
    for entry in entries:
        assert set(entry) == set(ENTRY_KEYS) and not entry["missing"]
        for key in POSITIVE:
            assert isinstance(entry[key], (int, float)) and entry[key] > 0, (entry["name"], key, entry[key])
        assert entry["ttft_p50_s"] <= entry["ttft_p95_s"] <= entry["ttft_p99_s"]
        assert entry["tpot_p50_s"] <= entry["tpot_p95_s"] <= entry["tpot_p99_s"] and entry["e2e_p50_s"] <= entry["e2e_p95_s"]
        assert entry["exact_token_counts"] is True  # counted by the server's usage chunk
        samples = entry["latency_samples"]
        assert len(samples) == entry["latency_requests"] == 2 * 2
        for sample in samples:  # our servers ignore EOS for latency runs: every request decodes DECODE_TOKENS
            assert sample["completion_tokens"] == DECODE_TOKENS and sample["prompt_tokens"] > 0
            assert 0 < sample["ttft_s"] < sample["e2e_s"]
        assert entry["e2e_p50_s"] == pytest.approx(statistics.median(s["e2e_s"] for s in samples))
        assert entry["e2e_p99_s"] <= max(s["e2e_s"] for s in samples)
        rates = [(s["completion_tokens"] - 1) / (s["e2e_s"] - s["ttft_s"]) for s in samples]
        assert entry["decode_tokens_per_s"] == pytest.approx(statistics.median(rates))
        per_token = [(s["e2e_s"] - s["ttft_s"]) / (s["completion_tokens"] - 1) for s in samples]
        assert entry["tpot_p50_s"] == pytest.approx(statistics.median(per_token))
        assert min(per_token) <= 1 / entry["decode_tokens_per_s"] <= max(per_token)
        # the server's prompt token counts (usage) agree with the tokenizer's count of the prompt set
        prompt_tokens = [s["prompt_tokens"] for s in samples]
        assert statistics.mean(prompt_tokens) == pytest.approx(results["settings"]["prompt_tokens_mean"])
        concurrent = entry["concurrent"]
        assert concurrent["concurrency"] == 2 and concurrent["requests"] == 2 * 2 * 2
        assert concurrent["output_tokens_per_s"] * concurrent["wall_s"] == pytest.approx(concurrent["output_tokens"], rel=0.05)
        checks = entry["overdistill"]
        assert checks["answers"] == 3 * 3 and 0 <= checks["truncation_rate"] <= 1 and checks["length_ratio"] > 0
        assert 0 <= checks["paraphrase_stability"] <= 1 and 0 <= checks["repetition_rate"] <= 1
        assert 0 <= entry["ece"] <= 1 and entry["kl_to_teacher"] >= 0
    teacher, prices, traffic = results["teacher"], results["prices"], results["traffic"]
    assert teacher["top1_agreement"] == 1.0 and teacher["kl_to_teacher"] == 0.0 and teacher["retention"] == 1.0
    api = prices["api"]
    per_request = (traffic["input_tokens_per_request"] * api["usd_per_1m_input_tokens"]
                   + traffic["output_tokens_per_request"] * api["usd_per_1m_output_tokens"]) / 1e6
    hourly = prices["hardware"]["usd_per_hour"]
    # the teacher ran here: priced as what it is (self-hosted on the students' hardware row), the API a what-if
    assert teacher["priced_as"].startswith("self-hosted")
    assert teacher["usd_per_month"] == pytest.approx(teacher["instances_needed"] * hourly * HOURS_PER_MONTH)
    assert teacher["api_what_if"]["usd_per_month"] == pytest.approx(per_request * traffic["requests_per_day"] * 30)
    assert teacher["api_what_if"]["api"] == api["name"]
    for entry in results["artifacts"]:
        assert entry["usd_per_month"] == pytest.approx(entry["instances_needed"] * hourly * HOURS_PER_MONTH)
        concurrent = entry["concurrent"]  # priced from the concurrency-N run's decode and prefill rates
        useful_seconds = 3600 * traffic["utilization"]
        assert entry["usd_per_1m_output_tokens"] == pytest.approx(hourly / (useful_seconds * concurrent["decode_tokens_per_s"]) * 1e6)
        assert entry["usd_per_1m_input_tokens"] == pytest.approx(hourly / (useful_seconds * concurrent["prefill_tokens_per_s"]) * 1e6)
        # decoding alone is faster than the run's output rate, whose wall time includes every prefill
        assert concurrent["decode_tokens_per_s"] > concurrent["output_tokens_per_s"]
        assert entry["retention"] == pytest.approx(entry["top1_accuracy"] / teacher["top1_accuracy"])
    assert prices["as_of"] and "assum" in prices["assumption"]
    assert results["machine"]["cpu_count"] > 0 and results["settings"]["concurrency"] == 2


def test_the_report_and_the_build_summary_show_every_model(built):
    out, result = built
    bench = out / "bench"
    markdown, page = (bench / "report.md").read_text(), (bench / "report.html").read_text()
    for name in ("teacher", "onnx-fp32", "gguf-f16"):
        assert name in markdown and name in page and name in result.stdout
    assert sorted(p.name for p in (bench / "plots").iterdir()) == [
        "cost_per_month.png", "latency_vs_size.png", "pareto.png", "quality_vs_size.png"]
    assert page.count("data:image/png;base64,") == 4
    answers = [json.loads(line) for line in (bench / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 3 * 3 * 3 and {a["model"] for a in answers} == {"teacher", "onnx-fp32", "gguf-f16"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["decode_tokens_per_s_gguf_f16"] > 0 and manifest["metrics"]["usd_per_month_onnx_fp32"] > 0


@pytest.mark.parametrize("kind", ["unreachable", "failing"])
def test_a_teacher_api_that_is_down_or_failing_marks_the_teacher_missing(built, tmp_path, kind):
    out = tmp_path / "copy"
    shutil.copytree(built[0], out)
    failing = fixed_answer_api(500, {"error": {"message": "upstream exploded", "type": "server_error"}})
    with failing as failing_url:
        url = f"http://127.0.0.1:{closed_port()}/v1" if kind == "unreachable" else failing_url
        result = cli("bench", out, "--teacher-api", url, "--teacher-model", "big-teacher")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = {"unreachable": "cannot reach", "failing": "answered HTTP 500: upstream exploded"}[kind]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "teacher not measured" in errors[0] and message in errors[0]
    results = results_of(out)
    teacher = results["teacher"]
    assert teacher["missing"] and message in teacher["error"] and teacher["format"] == "api"
    assert teacher["ttft_p50_s"] is None and teacher["usd_per_month"] is None and teacher["overdistill"] is None
    assert teacher["perplexity"] > 0  # teacher-forced quality still comes from the build's teacher weights
    assert all(not a["missing"] and a["decode_tokens_per_s"] > 0 for a in results["artifacts"])
    assert any("not measured" in w for w in results["warnings"])
    assert "missing" in (out / "bench" / "report.html").read_text()
    # the failed measurement is not cached: the next build measures the teacher again
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["bench"]["artifact"]["payload"]["retry"] is True


def test_compare_shows_the_deltas_between_two_builds(built, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(built[0], out)
    results = results_of(out)
    results["artifacts"][0]["decode_tokens_per_s"] *= 2
    (out / "bench" / "results.json").write_text(json.dumps(results))
    result = cli("bench", built[0], "--compare", out)
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "onnx-fp32" in line and "decode tok/s" in line)
    assert "-50" in row  # half the other build's decode speed
    missing = cli("bench", built[0], "--compare", tmp_path / "nothing")
    assert missing.returncode == 2 and "has no bench/results.json" in missing.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "distill.steps=3"], "takes bench.* keys only"),
    (["--prices", "/no/prices.yaml"], "bench.cost.prices '/no/prices.yaml' is not a file"),
    (["--teacher-api-mode", "telepathy"], "teacher_api.mode"),
    (["--teacher-api", "localhost:8000"], "teacher_api.url 'localhost:8000' is not an http(s) URL with a host"),
    (["--set", "bench.answer_tokens=500"], "bench.answer_tokens needs 595 tokens of context but the teacher's context is 512"),
    (["--set", "bench.answer_stop=[a, b, c, d, e]"], "bench.answer_stop has 5 strings; OpenAI-compatible APIs take at most 4"),
])
def test_bad_bench_input_exits_2_with_one_line(built, args, message):
    result = cli("bench", built[0], *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_external_teacher_api_with_a_key_is_measured_over_http(built, tmp_path):
    """The teacher behind a separate OpenAI-compatible server that wants a bearer key,
    read from the environment variable the recipe names."""
    import os

    from tests.runtime.server_process import running_server

    out = tmp_path / "api"
    shutil.copytree(built[0], out)
    with running_server(out / "teacher", "--api-key", "s3cret", "--model-name", "big-teacher") as server:
        env = {**os.environ, "MY_TEACHER_KEY": "s3cret"}
        result = subprocess.run([sys.executable, "-m", "edgedistill.cli", "bench", str(out), "--teacher-api",
                                 f"{server.url}/v1", "--teacher-model", "big-teacher", "--teacher-api-key-env",
                                 "MY_TEACHER_KEY"], capture_output=True, text=True, timeout=900, env=env)
        teacher = results_of(out)["teacher"]
        unauthorized = cli("bench", out, "--teacher-api", f"{server.url}/v1", "--teacher-model", "big-teacher",
                           "--teacher-api-key-env", "NO_SUCH_VARIABLE")
    assert result.returncode == 0, result.stderr[-2000:]
    assert teacher["format"] == "api" and teacher["served_by"] == f"{server.url}/v1 (model big-teacher)"
    assert not teacher["missing"] and teacher["ttft_p50_s"] > 0 and teacher["concurrent"]["output_tokens"] > 0
    assert teacher["bytes"] is None and teacher["peak_rss_bytes"] is None and teacher["usd_per_month"] > 0
    assert "s3cret" not in (out / "manifest.json").read_text()  # the key is read, never stored
    assert unauthorized.returncode == 2 and "answered HTTP 401" in unauthorized.stderr
