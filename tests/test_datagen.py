"""Teacher data generation against a real `edgedistill serve` (work in progress, issue 10)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from edgedistill.datagen import Teacher, answered_ids, generate, read_requests
from edgedistill.exporters.gguf import export_gguf
from edgedistill.runtime import load
from tests.runtime.server_process import running_server

PROMPTS = ["The json module", "Paths are", "The os module", "A list is", "The json module"]  # one duplicate


@pytest.fixture(scope="module")
def served(tiny_mistral_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("datagen") / "teacher.gguf"
    export_gguf(tiny_mistral_dir, path, "f32")
    with running_server(path, "--model-name", "teacher") as server:
        yield server, load(path)


def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return path


def test_every_prompt_is_answered_once_with_the_teachers_logprobs(served, tmp_path):
    server, local = served
    requests = read_requests(prompts_file(tmp_path))
    assert len(requests) == 4  # the duplicate is answered once
    out = tmp_path / "out.jsonl"
    progress = generate(requests, out, Teacher(f"{server.url}/v1", "teacher"), max_tokens=6, top_logprobs=2)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert progress.answered == 4 and not progress.failed and len(rows) == 4
    for row in rows:
        expected = local.generate(row["prompt"], max_tokens=6, logprobs=2)
        assert row["response"] == expected.text
        assert [t["logprob"] for t in row["logprobs"]] == pytest.approx([e.logprob for e in expected.logprobs], abs=1e-5)
    again = generate(requests, out, Teacher(f"{server.url}/v1", "teacher"), max_tokens=6)
    assert again.skipped == 4 and again.answered == 0 and len(out.read_text().splitlines()) == 4


class _Flaky(BaseHTTPRequestHandler):
    """Forwards to the real server, but answers every other request 503 first."""

    upstream = ""
    count = 0
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with _Flaky.lock:
            _Flaky.count += 1
            fail = _Flaky.count % 2 == 1
        if fail:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        answer = httpx.post(_Flaky.upstream + self.path, content=body, headers={"Content-Type": "application/json"})
        self.send_response(answer.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args):
        pass


def test_failed_requests_are_retried_and_nothing_is_duplicated_or_lost(served, tmp_path):
    server, _ = served
    _Flaky.upstream = server.url
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        out = tmp_path / "out.jsonl"
        out.write_text(json.dumps({"id": "stale", "prompt": "x", "response": "y"}) + "\n" + '{"id": "torn", "pro')
        progress = generate(read_requests(prompts_file(tmp_path)), out,
                            Teacher(f"http://127.0.0.1:{proxy.server_port}/v1", "teacher"), max_tokens=4,
                            concurrency=2, backoff_s=0.01)
    finally:
        proxy.shutdown()
    assert progress.answered == 4 and not progress.failed
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids[0] == "stale" and len(ids) == len(set(ids)) == 5  # the torn line was cut, none lost or doubled
    assert answered_ids(out) == set(ids)
