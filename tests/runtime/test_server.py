"""The OpenAI-compatible server, run as a real process and driven by the official client."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from edgedistill.exporters.gguf import export_gguf
from edgedistill.runtime import load
from tests.runtime.server_process import running_server

KEY = "test-key"
QUESTION = [{"role": "user", "content": "What does the json module do?"}]


@pytest.fixture(scope="module")
def chat_gguf(chatml_llama_dir, tmp_path_factory):
    """The tiny Llama with a ChatML template as an f32 GGUF."""
    path = tmp_path_factory.mktemp("server-model") / "chat.gguf"
    export_gguf(chatml_llama_dir, path, "f32")
    return path


@pytest.fixture(scope="module")
def server(chat_gguf):
    with running_server(chat_gguf, "--api-key", KEY, "--max-prompt-tokens", "200", "--max-tokens-limit", "256",
                        "--model-name", "tiny-chat") as process:
        yield process


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def local(chat_gguf):
    """The same artifact in this process: what the server must answer."""
    return load(chat_gguf)


def test_models_lists_the_served_artifact(client, local):
    models = client.models.list().data

    assert [m.id for m in models] == ["tiny-chat"]
    assert models[0].model_extra["context_length"] == local.context_length
    assert client.models.retrieve("tiny-chat").id == "tiny-chat"
    with pytest.raises(openai.NotFoundError, match="this server serves 'tiny-chat'"):
        client.models.retrieve("gpt-4o")


def test_completion_text_and_usage_match_the_runtime(client, local):
    prompt = "The pathlib module offers"
    expected = local.generate(prompt, max_tokens=12, ignore_eos=True)

    response = client.completions.create(model="tiny-chat", prompt=prompt, max_tokens=12, temperature=0,
                                         extra_body={"ignore_eos": True})

    assert response.choices[0].text == expected.text
    assert response.choices[0].finish_reason == "length"
    assert response.usage.prompt_tokens == len(local.encode(prompt))
    assert response.usage.completion_tokens == 12
    assert response.usage.total_tokens == response.usage.prompt_tokens + 12


def test_token_id_prompts_and_batches_of_prompts(client, local):
    ids = local.encode("Return a new path")

    response = client.completions.create(model="tiny-chat", prompt=[ids, ids[:2]], max_tokens=5, temperature=0,
                                         extra_body={"ignore_eos": True})

    assert [c.index for c in response.choices] == [0, 1]
    assert response.choices[0].text == local.generate(ids, max_tokens=5, ignore_eos=True).text
    assert response.choices[1].text == local.generate(ids[:2], max_tokens=5, ignore_eos=True).text
    assert response.usage.prompt_tokens == len(ids) + 2 and response.usage.completion_tokens == 10


def test_chat_uses_the_artifacts_template(client, local):
    expected = local.generate(QUESTION, max_tokens=10, ignore_eos=True)

    response = client.chat.completions.create(model="tiny-chat", messages=QUESTION, max_tokens=10, temperature=0,
                                              extra_body={"ignore_eos": True})

    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content == expected.text
    assert response.usage.prompt_tokens == len(local.prepare(QUESTION).ids)
    assert response.usage.completion_tokens == 10


def test_streamed_chat_concatenates_to_the_whole_answer_with_usage_last(client, local):
    expected = local.generate(QUESTION, max_tokens=16, ignore_eos=True)

    chunks = list(client.chat.completions.create(
        model="tiny-chat", messages=QUESTION, max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))

    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens == len(local.prepare(QUESTION).ids)


def test_streamed_completion_with_stop_string(client, local):
    full = local.generate("The json module", max_tokens=20, ignore_eos=True).text
    stop = full[3:6]

    chunks = list(client.completions.create(model="tiny-chat", prompt="The json module", max_tokens=20, temperature=0,
                                            stream=True, stop=[stop], extra_body={"ignore_eos": True}))

    assert "".join(c.choices[0].text for c in chunks) == full[:full.find(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_seeded_sampling_is_repeatable_and_n_gives_distinct_seeds(client):
    ask = dict(model="tiny-chat", prompt="The os module", max_tokens=12, temperature=1.0, seed=5, n=2,
               extra_body={"ignore_eos": True})

    first, second = client.completions.create(**ask), client.completions.create(**ask)

    assert [c.text for c in first.choices] == [c.text for c in second.choices]
    assert first.choices[0].text != first.choices[1].text
    assert first.usage.completion_tokens == 24
    negative_seed = client.completions.create(**{**ask, "seed": -1, "n": 1})  # llama.cpp-style clients send -1
    assert negative_seed.usage.completion_tokens == 12


@pytest.mark.parametrize("ask, status, needle", [
    ({"prompt": "x", "max_tokens": -3}, 400, "max_tokens: Input should be greater than or equal to 1"),
    ({"prompt": "x", "max_tokens": 300}, 400, "this server allows at most 256"),
    ({"prompt": "word " * 400, "max_tokens": 4}, 400, "this server accepts at most 200"),
    ({"prompt": "x", "temperature": 3}, 400, "temperature: Input should be less than or equal to 2"),
    ({"prompt": "x", "logprobs": 21}, 400, "at most 20 alternatives per token, got 21"),
    ({"prompt": "x", "logprobs": True}, 400, "logprobs: completions take a count of alternatives"),
    ({"prompt": "x", "top_logprobs": 2}, 400, "top_logprobs is a chat field"),
    ({"prompt": "x", "logprobs": 2, "echo": True, "stream": True}, 400, "echo with logprobs"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4 stop strings"),
    ({"prompt": [5, 999999]}, 400, "outside the vocabulary"),
    ({"max_tokens": 3}, 400, "prompt: Field required"),
])
def test_bad_completion_requests_get_openai_errors(server, ask, status, needle):
    response = httpx.post(f"{server.url}/v1/completions", json=ask, headers={"Authorization": f"Bearer {KEY}"})

    assert response.status_code == status
    error = response.json()["error"]
    assert needle in error["message"]
    assert error["type"] == "invalid_request_error"


def test_bad_chat_requests_raise_the_clients_typed_errors(client, server):
    with pytest.raises(openai.BadRequestError, match="messages: Field required"):
        client.chat.completions.create(model="tiny-chat", messages=openai.omit, max_tokens=3)
    with pytest.raises(openai.BadRequestError, match="role 'wizard' is not one of"):
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "wizard", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as huge:
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "tokens " * 300}])
    assert huge.value.body["code"] == "context_length_exceeded"
    wrong_key = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="incorrect or missing API key"):
        wrong_key.chat.completions.create(model="tiny-chat", messages=QUESTION)


def test_malformed_bodies_and_unknown_paths_get_json_errors(server):
    auth = {"Authorization": f"Bearer {KEY}"}

    not_json = httpx.post(f"{server.url}/v1/completions", content=b"{not json",
                          headers={**auth, "Content-Type": "application/json"})
    not_an_object = httpx.post(f"{server.url}/v1/completions", content=b"[1, 2]", headers=auth)
    too_big = httpx.post(f"{server.url}/v1/completions", content=b"x" * (2 << 20), headers=auth)
    no_key = httpx.get(f"{server.url}/v1/models")
    missing = httpx.get(f"{server.url}/v1/engines", headers=auth)

    assert not_json.status_code == 400 and not_json.json()["error"]["message"] == "the body is not valid JSON"
    assert not_an_object.status_code == 400 and "must be a JSON object" in not_an_object.json()["error"]["message"]
    assert too_big.status_code == 413 and "over 1048576 bytes" in too_big.json()["error"]["message"]
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
    assert missing.status_code == 404 and "error" in missing.json()
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"  # health needs no key


def test_32_concurrent_streams_all_complete(server, local):
    expected = local.generate("The socket module", max_tokens=24, ignore_eos=True).text
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120)

    async def one_stream() -> tuple[str, str | None]:
        text, finish = "", None
        async for chunk in await client.completions.create(model="tiny-chat", prompt="The socket module", max_tokens=24,
                                                           temperature=0, stream=True, extra_body={"ignore_eos": True}):
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
        return text, finish

    async def all_streams():
        try:
            return await asyncio.gather(*(one_stream() for _ in range(32)))
        finally:
            await client.close()

    results = asyncio.run(all_streams())

    assert results == [(expected, "length")] * 32
    assert httpx.get(f"{server.url}/health").json()["running"] == 0


def _wait_for(url: str, condition, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(f"{url}/health").json()
        if condition(health):
            return health
        time.sleep(0.02)
    raise AssertionError(f"server state never reached: last {health}")


LONG = {"prompt": "x", "max_tokens": 6000, "temperature": 0, "ignore_eos": True, "stream": True}


@pytest.mark.parametrize("parallel, max_queue", [(1, 1), (2, 0)])
def test_a_full_queue_answers_429_and_disconnects_cancel(long_context_onnx, parallel, max_queue):
    options = ("--parallel", str(parallel), "--max-queue", str(max_queue), "--max-tokens-limit", "8000")
    with running_server(long_context_onnx, *options) as server, httpx.Client(timeout=60) as http, ExitStack() as streams:
        for _ in range(parallel + max_queue):
            response = streams.enter_context(http.stream("POST", f"{server.url}/v1/completions", json=LONG))
            assert response.status_code == 200
        _wait_for(server.url, lambda h: h["running"] == parallel and h["queued"] == max_queue)

        refused = http.post(f"{server.url}/v1/completions", json=LONG)

        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        streams.close()  # every client leaves: running generations stop early, queued ones never start
        health = _wait_for(server.url, lambda h: h["running"] == 0 and h["queued"] == 0, timeout=5)
        assert health["cancelled"] == parallel and health["completed"] == 0


def test_the_server_process_never_loads_torch(server):
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()

    assert "libtorch" not in maps
    assert "libllama" in maps  # the backend it does use


def test_a_non_streaming_client_that_times_out_cancels_its_generation(long_context_onnx):
    with running_server(long_context_onnx, "--max-tokens-limit", "8000") as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/completions", json={**LONG, "stream": False}, timeout=0.5)

        health = _wait_for(server.url, lambda h: h["cancelled"] == 1, timeout=5)

        assert health["running"] == 0 and health["completed"] == 0


def test_sigterm_lets_a_running_stream_finish_then_exits_cleanly(long_context_onnx):
    with running_server(long_context_onnx, "--max-tokens-limit", "8000") as server:
        lines = []
        with httpx.stream("POST", f"{server.url}/v1/completions", json={**LONG, "max_tokens": 1500}, timeout=60) as stream:
            for line in stream.iter_lines():
                if not lines:
                    server.process.terminate()  # SIGTERM mid-generation
                if len(lines) == 1000:  # still streaming to us, but no longer accepting anyone new
                    with pytest.raises(httpx.ConnectError):
                        httpx.get(f"{server.url}/health")
                lines.append(line)

        events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        assert lines[-1] == "data: [DONE]" or lines[-2:] == ["data: [DONE]", ""]
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        assert sum(bool(e["choices"][0]["text"]) for e in events) >= 1000  # the whole answer was sent
        assert server.process.wait(30) == 0


def test_a_stream_longer_than_the_shutdown_grace_ends_with_an_error_event(long_context_onnx):
    with running_server(long_context_onnx, "--max-tokens-limit", "8000", "--shutdown-grace", "2") as server:
        lines = []
        with httpx.stream("POST", f"{server.url}/v1/completions", json=LONG, timeout=60) as stream:
            for line in stream.iter_lines():
                if not lines:
                    server.process.terminate()  # 6,000 tokens take longer than 2 s
                lines.append(line)

        last = json.loads([line for line in lines if line.startswith("data: ")][-1][6:])
        assert last["error"]["code"] == "shutting_down"
        assert server.process.wait(30) == 0


def test_completion_logprobs_are_the_models_own_at_t1(client, local):
    """Whatever the sampling temperature, logprobs are log-softmax of the raw logits at T = 1."""
    done = client.completions.create(model="tiny-chat", prompt="The json module", max_tokens=6, logprobs=3,
                                     temperature=0.7, seed=3)
    expected = local.generate("The json module", max_tokens=6, logprobs=3, temperature=0.7, seed=3)
    lp = done.choices[0].logprobs
    assert lp.tokens == [local.decode([e.token]) for e in expected.logprobs]
    assert lp.token_logprobs == pytest.approx([e.logprob for e in expected.logprobs], abs=1e-5)
    assert all(len(top) == 3 for top in lp.top_logprobs)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]


def test_streamed_chat_logprobs_come_with_every_token(client, local):
    messages = [{"role": "user", "content": "Paths"}]
    chunks = list(client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=8, logprobs=True,
                                                 temperature=0,
                                                 top_logprobs=2, stream=True, extra_body={"ignore_eos": True}))
    content = [item for c in chunks if c.choices and c.choices[0].logprobs for item in c.choices[0].logprobs.content]
    expected = local.generate(messages, max_tokens=8, logprobs=2, ignore_eos=True)
    assert [item.logprob for item in content] == pytest.approx([e.logprob for e in expected.logprobs], abs=1e-5)
    assert [t.logprob for item in content for t in item.top_logprobs] == pytest.approx(
        [lp for e in expected.logprobs for _, lp in e.top], abs=1e-5)
    assert all(len(item.top_logprobs) == 2 for item in content)
    assert all(item.bytes == list(item.token.encode()) for item in content)


def test_chat_top_logprobs_need_logprobs(server):
    response = httpx.post(f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                          json={"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})
    assert response.status_code == 400 and "top_logprobs needs logprobs: true" in response.json()["error"]["message"]


def test_echo_with_logprobs_scores_the_prompt_as_the_model_does(client, local):
    """Completions echo + logprobs (a teacher behind an API scoring text it did not write):
    every prompt token after the first gets log-softmax(logits) at T = 1 of the position
    before it, then the generated tokens follow with their own."""
    ids = local.encode("The json module encodes and decodes")
    done = client.completions.create(model="tiny-chat", prompt=ids, max_tokens=2, logprobs=3, echo=True, temperature=0)
    lp = done.choices[0].logprobs
    logits = local.logits(ids).astype("float64")
    logsoftmax = logits - logits.max(-1, keepdims=True)
    logsoftmax -= np.log(np.exp(logsoftmax).sum(-1, keepdims=True))
    assert lp.tokens[:len(ids)] == [local.decode([t]) for t in ids]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.token_logprobs[1:len(ids)] == pytest.approx([logsoftmax[i, t] for i, t in enumerate(ids[1:])], abs=1e-5)
    best = [max(row, key=row.get) for row in lp.top_logprobs[1:len(ids)]]
    assert best == [local.decode([int(np.argmax(logsoftmax[i]))]) for i in range(len(ids) - 1)]
    expected = local.generate(ids, max_tokens=2, logprobs=3)
    assert len(lp.tokens) == len(ids) + 2 and lp.token_logprobs[len(ids):] == pytest.approx(
        [e.logprob for e in expected.logprobs], abs=1e-5)
    assert done.choices[0].text == local.decode(ids) + expected.text
    assert lp.text_offset[len(ids)] == len(local.decode(ids))
