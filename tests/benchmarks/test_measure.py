"""The measuring parts of the bench against real servers: a GGUF student behind
`edgedistill serve`, an address nobody listens on, and an HTTP server that fails."""

import numpy as np
import pytest

from edgedistill.benchmarks.client import Endpoint, TargetError
from edgedistill.benchmarks.latency import measure_concurrent, measure_sequential, percentile
from edgedistill.benchmarks.served import ServedModel
from edgedistill.exporters.gguf import export_gguf
from edgedistill.runtime import load
from tests.benchmarks.fake_api import closed_port, fixed_answer_api


@pytest.fixture(scope="module")
def gguf(tiny_mistral_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("measure") / "student.gguf"
    export_gguf(tiny_mistral_dir, path, "f32")
    return path


@pytest.fixture(scope="module")
def served(gguf):
    with ServedModel(gguf, "student", max_tokens_limit=64) as server:
        yield server


def test_percentiles_interpolate_linearly_like_numpy():
    values = list(np.random.default_rng(0).exponential(size=37))
    for q in (50, 95, 99):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert percentile([], 50) is None


def test_a_streamed_request_counts_what_the_runtime_generates(served, gguf):
    expected = load(gguf).generate("The json module", max_tokens=12, ignore_eos=True)
    with Endpoint(served.url, "student") as endpoint:
        result = endpoint.stream("The json module", 12, extra={"ignore_eos": True})
    assert result.text == expected.text and result.completion_tokens == 12 and result.exact_counts
    assert result.prompt_tokens == expected.timings.prompt_tokens and result.finish_reason == "length"
    assert 0 < result.ttft_s < result.e2e_s
    assert result.decode_tokens_per_s * result.decode_s == pytest.approx(11)  # tokens after the first


def test_sequential_and_concurrent_runs_report_consistent_numbers(served):
    prompts = ["The json module", "Paths are"]
    with Endpoint(served.url, "student") as endpoint:
        summary, timed = measure_sequential(endpoint, prompts, 8, repeats=2, warmup=1, extra={"ignore_eos": True})
    assert summary["latency_requests"] == len(timed) == 4 and all(r.completion_tokens == 8 for r in timed)
    assert summary["ttft_p50_s"] == pytest.approx(np.percentile([r.ttft_s for r in timed], 50))
    assert summary["ttft_p50_s"] <= summary["ttft_p95_s"] <= summary["ttft_p99_s"] <= summary["e2e_p99_s"]
    concurrent = measure_concurrent(lambda: Endpoint(served.url, "student"), prompts, 8, 2, 2, {"ignore_eos": True})
    assert concurrent["requests"] == 8 and concurrent["output_tokens"] == 64
    assert concurrent["output_tokens_per_s"] * concurrent["wall_s"] == pytest.approx(64)


def test_the_server_reports_cold_start_and_peak_memory(served, gguf):
    assert served.load_s > 0
    assert served.peak_rss_bytes() > gguf.stat().st_size  # the process holds at least the weights


def test_an_address_nobody_listens_on_is_a_clear_error():
    with Endpoint(f"http://127.0.0.1:{closed_port()}/v1", "teacher") as endpoint, pytest.raises(TargetError, match="cannot reach"):
        endpoint.check()


@pytest.mark.parametrize(("status", "body", "message"), [
    (503, {"error": {"message": "model overloaded", "type": "server_error"}}, "answered HTTP 503: model overloaded"),
    # 200 with one JSON body: a server that ignores stream: true is not measured as if it streamed
    (200, {"choices": [{"text": "hello", "finish_reason": None}]}, "without a finish_reason or \\[DONE\\]"),
])
def test_a_server_that_fails_or_does_not_stream_is_a_clear_error(status, body, message):
    with fixed_answer_api(status, body) as url, Endpoint(url, "teacher") as endpoint:
        with pytest.raises(TargetError, match=message):
            endpoint.check()


def test_chat_mode_sends_a_user_message_through_the_template(chatml_llama_dir, tmp_path):
    path = tmp_path / "chat.gguf"
    export_gguf(chatml_llama_dir, path, "f32")
    messages = [{"role": "user", "content": "The json module"}]
    expected = load(path).generate(messages, max_tokens=6, ignore_eos=True)
    with ServedModel(path, "chat") as server, Endpoint(server.url, "chat", mode="chat") as endpoint:
        result = endpoint.stream("The json module", 6, extra={"ignore_eos": True})
    assert result.text == expected.text and result.completion_tokens == len(expected.tokens)
    assert result.prompt_tokens == expected.timings.prompt_tokens


def test_a_served_chat_student_answers_probes_as_messages_and_stops_where_told(chatml_llama_dir, tmp_path):
    from edgedistill.benchmarks.suite import Settings, Target, measure_served

    path = tmp_path / "chat.gguf"
    export_gguf(chatml_llama_dir, path, "f32")
    local = load(path)
    probes = [["The json module", "JSON in Python"], ["Paths", "The pathlib module"]]
    stop = local.decode(local.generate([{"role": "user", "content": "Paths"}], max_tokens=3, ignore_eos=True).tokens[1:2])
    settings = Settings(["The json module"], probes, decode_tokens=4, answer_tokens=12, repeats=1, warmup=0,
                        concurrency=2, threads=2, answer_stop=(stop,), student_mode="chat")
    target = Target("chat", "student", "gguf", path=path)
    measure_served(target, settings, log=lambda message: None)
    entry = target.entry
    assert not entry["missing"], entry["error"]
    answers = [a for group in entry["answers"] for a in group]
    expected = [local.generate([{"role": "user", "content": p}], max_tokens=12, stop=[stop]) for g in probes for p in g]
    assert [a["text"] for a in answers] == [c.text for c in expected]
    assert answers[2]["finish_reason"] == "stop" and stop not in answers[2]["text"]  # "Paths" hits the stop string
    assert entry["concurrent"]["requests"] == 2 and entry["latency_requests"] == 1
