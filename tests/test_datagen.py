"""Teacher data generation (`edgedistill generate-data`) against a real `edgedistill serve`
on 127.0.0.1, a proxy in front of it that fails or slows requests, and a local HF teacher."""

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import torch

from edgedistill.cli import main
from edgedistill.datagen import summary_path
from edgedistill.datagen.api import Sampling, Teacher, generate
from edgedistill.datagen.filters import ResponseFilter
from edgedistill.datagen.local import LocalTeacher
from edgedistill.datagen.store import answered_ids, read_requests
from edgedistill.datagen.templates import split_rationale
from edgedistill.exporters.gguf import export_gguf
from edgedistill.hf import load_model
from edgedistill.runtime import load
from tests.benchmarks.fake_api import fixed_answer_api
from tests.runtime.server_process import running_server

PROMPTS = ["The json module", "Paths are", "The os module", "A list is", "The json module"]  # one duplicate


@pytest.fixture(scope="module")
def served(tiny_mistral_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("datagen") / "teacher.gguf"
    export_gguf(tiny_mistral_dir, path, "f32")
    with running_server(path, "--model-name", "teacher") as server:
        yield server, load(path)


def prompts_file(tmp_path, prompts=PROMPTS):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_prompt_is_answered_once_with_the_teachers_logprobs(served, tmp_path):
    server, local = served
    requests = read_requests(prompts_file(tmp_path))
    assert len(requests) == 4  # the duplicate is answered once
    out = tmp_path / "out.jsonl"
    progress = generate(requests, out, Teacher(f"{server.url}/v1", "teacher"), Sampling(max_tokens=6, top_logprobs=2))
    rows = rows_of(out)
    assert progress.answered == 4 and not progress.failed and len(rows) == 4
    for row in rows:
        expected = local.generate(row["prompt"], max_tokens=6, logprobs=2)
        assert row["response"] == expected.text
        assert [t["logprob"] for t in row["logprobs"]] == pytest.approx([e.logprob for e in expected.logprobs], abs=1e-5)
        for got, want in zip(row["logprobs"], expected.logprobs):  # completions name alternatives by text (a dict)
            assert dict(got["top"]) == pytest.approx({local.decode([t]): lp for t, lp in want.top}, abs=1e-5)
    again = generate(requests, out, Teacher(f"{server.url}/v1", "teacher"), Sampling(max_tokens=6))
    assert again.skipped == 4 and again.answered == 0 and len(out.read_text().splitlines()) == 4


class _Proxy(BaseHTTPRequestHandler):
    """Forwards to the real server; answers the first attempt of every distinct request 503
    (``flaky``) and delays each forwarded one by ``delay`` seconds."""

    upstream, flaky, delay, count, lock, seen = "", True, 0.0, 0, threading.Lock(), set()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with _Proxy.lock:
            _Proxy.count += 1
            fail = _Proxy.flaky and body not in _Proxy.seen
            _Proxy.seen.add(body)
        if fail:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        time.sleep(_Proxy.delay)
        answer = httpx.post(_Proxy.upstream + self.path, content=body, headers={"Content-Type": "application/json"})
        self.send_response(answer.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args):
        pass


@pytest.fixture
def proxy(served):
    _Proxy.upstream, _Proxy.flaky, _Proxy.delay, _Proxy.count, _Proxy.seen = served[0].url, True, 0.0, 0, set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_failed_requests_are_retried_and_a_torn_last_line_is_cut(proxy, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "stale", "prompt": "x", "response": "y"}) + "\n" + '{"id": "torn", "pro')
    progress = generate(read_requests(prompts_file(tmp_path)), out, Teacher(proxy, "teacher"), Sampling(max_tokens=4),
                        concurrency=2, backoff_s=0.01)
    assert progress.answered == 4 and not progress.failed and _Proxy.count == 8  # every first attempt got a 503
    ids = [row["id"] for row in rows_of(out)]
    assert ids[0] == "stale" and len(ids) == len(set(ids)) == 5  # the torn line was cut, none lost or doubled
    assert answered_ids(out) == set(ids)


def test_a_killed_run_resumes_without_duplicating_or_losing_a_prompt(served, proxy, tmp_path):
    """generate-data as a real process through a slow, flaky proxy, SIGKILLed midway, then rerun."""
    _, local = served
    _Proxy.delay = 0.4
    prompts = [f"Question {i}: what does module number {i} do" for i in range(16)]
    command = [sys.executable, "-m", "edgedistill.cli", "generate-data", str(prompts_file(tmp_path, prompts)),
               "--out", str(tmp_path / "out.jsonl"), "--teacher-api", proxy, "--max-tokens", "5", "--concurrency", "2",
               "--backoff", "0.01", "--top-logprobs", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = tmp_path / "out.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.is_file() or len(out.read_text().splitlines()) < 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    before = len(rows_of(out)) if out.read_text().endswith("\n") else len(out.read_text().splitlines()) - 1
    assert 3 <= before < 16
    _Proxy.delay = 0.0
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    rows = rows_of(out)
    assert sorted(row["prompt"] for row in rows) == sorted(prompts)  # each once: nothing duplicated or lost
    for row in rows:  # and nothing half-written: every row is the teacher's whole answer
        assert row["response"] == local.generate(row["prompt"], max_tokens=5).text
    summary = json.loads(summary_path(out).read_text())
    assert summary["skipped"] == before and summary["answered"] == 16 - before and summary["file"]["rows"] == 16
    assert summary["total_usd"] == pytest.approx((summary["file"]["prompt_tokens"] * 2.5
                                                  + summary["file"]["completion_tokens"] * 10.0) / 1e6)
    assert "16 answered" in rerun.stdout and "API cost" in rerun.stdout


def test_local_teacher_rows_carry_its_exact_token_ids_and_logprobs(tiny_llama_dir, tmp_path):
    teacher = LocalTeacher(tiny_llama_dir)
    out = tmp_path / "out.jsonl"
    assert main(["generate-data", str(prompts_file(tmp_path)), "--out", str(out), "--teacher", str(tiny_llama_dir),
                 "--max-tokens", "6", "--top-logprobs", "3", "--batch-size", "3", "--max-repetition", "1"]) == 0
    rows = rows_of(out)
    assert len(rows) == 4 and all(row["kept"] for row in rows)
    model = load_model(tiny_llama_dir)
    for row in rows:  # each token's logprob is log_softmax of the teacher's logits at T = 1 (batched, left-padded)
        prompt = teacher.prompt_ids(row)
        ids = [entry["id"] for entry in row["logprobs"]]
        with torch.no_grad():
            logprobs = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1:-1].log_softmax(-1)
        assert [e["logprob"] for e in row["logprobs"]] == pytest.approx(logprobs[range(len(ids)), ids].tolist(), abs=1e-4)
        assert [[t for _, _, t in e["top"]] for e in row["logprobs"]] == logprobs.topk(3).indices.tolist()
        assert row["response"] == teacher.tokenizer.decode([t for t in ids if t != teacher.eos])
        assert row["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": len([t for t in ids if t != teacher.eos])}


COT = {"choices": [{"index": 0, "text": "The module is json.\nIt parses text.\nAnswer: it encodes JSON",
                    "finish_reason": "stop"}], "usage": {"prompt_tokens": 30, "completion_tokens": 12}}


def test_chain_of_thought_template_keeps_rationale_and_answer_apart_and_prices_the_run(tmp_path):
    out = tmp_path / "cot.jsonl"
    with fixed_answer_api(200, COT) as url:
        assert main(["generate-data", str(prompts_file(tmp_path)), "--out", str(out), "--teacher-api", url,
                     "--template", "step-by-step", "--api-price", "small-api"]) == 0
    rows = rows_of(out)
    assert len(rows) == 4 and all(row["kept"] for row in rows)
    assert sorted(row["prompt"].split("\n")[0] for row in rows) == sorted(set(PROMPTS))  # rows land as answered
    assert all(row["prompt"].split("\n", 1)[1].startswith("Let's think step by step") for row in rows)
    assert all(row["rationale"] == "The module is json.\nIt parses text." and row["answer"] == "it encodes JSON"
               for row in rows)
    summary = json.loads(summary_path(out).read_text())
    assert summary["total_usd"] == pytest.approx(4 * (30 * 0.15 + 12 * 0.60) / 1e6)


@pytest.mark.parametrize("response, finish, reason", [
    ("", "stop", "shorter than 1 words"),
    ("the same words again " * 20, "stop", "repetitive"),
    ("a fine answer", "length", "truncated at max_tokens"),
    ("some reasoning without the marker", "stop", "no answer line"),
])
def test_the_filter_drops_bad_responses_and_says_why(response, finish, reason):
    verdict = ResponseFilter(drop_truncated=True, require_answer=reason == "no answer line").check(
        {"response": response, "finish_reason": finish})
    assert verdict is not None and reason in verdict
    assert ResponseFilter().check({"response": "Answer: yes", "finish_reason": "stop"}) is None
    assert split_rationale("why\n answer: yes") == ("why", "yes") and split_rationale("no marker") is None


@pytest.mark.parametrize("args, needle", [
    (["--teacher", "x", "--teacher-api", "http://h/v1"], "exactly one"),
    (["--teacher-api", "ftp://nowhere"], "not an http(s) URL"),
    (["--teacher-api", "http://h/v1", "--template", "nonexistent"], "not a builtin"),
    (["--teacher", "/no/such/folder"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, needle):
    out = tmp_path / "out.jsonl"
    assert main(["generate-data", str(prompts_file(tmp_path)), "--out", str(out), *args]) == 2
    assert needle in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("content, needle", [
    (b'{"prompt": "ok"}\n{"text": "no prompt"}\n', "line 2 needs a 'prompt'"),
    (b'{"prompt": "ok", "messages": []}\n', "line 1 has both 'prompt' and 'messages'"),
    (b'{"prompt": "caf\xe9"}\n', "is not UTF-8 text"),
    (b'{"prompt": "ok"\n', "line 1 is not JSON"),
])
def test_a_bad_prompts_file_is_named(tmp_path, capsys, content, needle):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(content)
    assert main(["generate-data", str(prompts), "--out", str(tmp_path / "o.jsonl"), "--teacher-api", "http://h/v1"]) == 2
    assert needle in capsys.readouterr().err


def test_an_output_that_is_not_ours_or_a_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text('{"no id": 1}\n')
    assert main(["generate-data", str(prompts_file(tmp_path)), "--out", str(out), "--teacher-api", "http://h/v1"]) == 2
    assert "line 1 is not an answered row" in capsys.readouterr().err and out.read_text() == '{"no id": 1}\n'
    assert main(["generate-data", str(prompts_file(tmp_path)), "--out", str(tmp_path), "--teacher-api", "http://h/v1"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_a_seeded_sampled_run_is_repeatable_and_prompts_get_their_own_draws(served, tmp_path):
    server, _ = served
    prompts = tmp_path / "same.jsonl"  # the same text twice under two ids: one seed each, so two different samples
    prompts.write_text('{"id": "a", "prompt": "The json module"}\n{"id": "b", "prompt": "The json module"}\n')
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for out in outs:
        generate(read_requests(prompts), out, Teacher(f"{server.url}/v1", "teacher"),
                 Sampling(max_tokens=12, temperature=1.0, seed=7))
    first, second = ({row["id"]: row["response"] for row in rows_of(out)} for out in outs)
    assert first == second and first["a"] != first["b"]


def test_per_prompt_rejections_do_not_stop_the_run(tmp_path):
    out = tmp_path / "out.jsonl"
    prompts = prompts_file(tmp_path, [f"prompt {i}" for i in range(20)])
    with fixed_answer_api(400, {"error": {"message": "prompt too long"}}) as url:
        assert main(["generate-data", str(prompts), "--out", str(out), "--teacher-api", url, "--retries", "0"]) == 1
    failures = json.loads(summary_path(out).read_text())["failures"]
    assert len(failures) == 20 and all("HTTP 400" in f for f in failures)  # every prompt was tried


def test_an_api_that_keeps_failing_exits_1_writes_nothing_and_stops_sending(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    prompts = prompts_file(tmp_path, [f"prompt {i}" for i in range(30)])
    with fixed_answer_api(503, {"error": {"message": "overloaded"}}) as url:
        assert main(["generate-data", str(prompts), "--out", str(out), "--teacher-api", url,
                     "--retries", "1", "--backoff", "0", "--concurrency", "2"]) == 1
    assert "rerun the same command" in capsys.readouterr().err and out.read_text() == ""
    summary = json.loads(summary_path(out).read_text())
    assert summary["failed"] == 30 and "HTTP 503" in summary["failures"][0]
    not_sent = [f for f in summary["failures"] if "not sent: the API failed" in f]
    assert len(not_sent) >= 10  # after 8 failures in a row the rest were not sent
