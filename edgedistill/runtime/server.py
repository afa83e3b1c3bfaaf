"""OpenAI-compatible HTTP server over a loaded student (FastAPI + uvicorn + sse-starlette).

Endpoints: ``GET /health``, ``GET /v1/models`` (and ``/v1/models/{id}``),
``POST /v1/completions``, ``POST /v1/chat/completions`` (``stream: true`` answers as
server-sent events ending in ``data: [DONE]``). Every error is an OpenAI error body: bad
JSON or fields 400, a wrong or missing key 401, an unknown model id 404, a body over
``max_body_bytes`` 413, a full queue 429 (``Retry-After: 1``), a backend failure 500.

Concurrency: ``parallel`` model instances each decode one request at a time in a worker
thread; up to ``max_queue`` more requests wait for one. A client that disconnects cancels
its generation before the next token. SIGTERM stops accepting connections and lets
running requests finish for up to ``shutdown_grace_s`` seconds.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import signal
import time
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException

from edgedistill.runtime.base import Completion, Model, PreparedPrompt, StreamChunk
from edgedistill.runtime.openai_api import (
    ApiError, ChatRequest, CompletionRequest, chunk_body, completion_body, error_body, logprobs_body, new_id, usage,
    usage_chunk,
)
from edgedistill.runtime.sampling import SamplingParams
from edgedistill.runtime.scheduler import Admission, QueueFull, Scheduler
from edgedistill.runtime.transport import AnnouncingServer, BodyLimit, check_can_listen

logger = logging.getLogger("edgedistill.server")


@dataclass(frozen=True)
class ServerSettings:
    model_id: str
    api_key: str | None = None
    max_queue: int = 64  # requests waiting for a model instance; more get 429
    max_prompt_tokens: int = 0  # 0 = the model's context minus one
    max_tokens_limit: int = 1024  # the most a request may ask for (chat without max_tokens gets this, capped by context)
    max_body_bytes: int = 1 << 20
    shutdown_grace_s: float = 30.0


def create_app(models: list[Model], settings: ServerSettings):
    """The FastAPI app serving ``models`` (instances of one artifact)."""
    model = models[0]
    scheduler = Scheduler(models, settings.max_queue)
    max_prompt_tokens = min(settings.max_prompt_tokens or model.context_length, model.context_length - 1)
    app = FastAPI(title="edgedistill", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_request, exc: ApiError):
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        if first.get("type") == "json_invalid":
            message = "the body is not valid JSON"
        elif not where:
            message = "the body must be a JSON object (send Content-Type: application/json)"
        else:
            message = f"{where}: {first.get('msg')}"
        return JSONResponse(error_body(message, param=where or None), status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(_request, exc: Exception):  # a bug: still an OpenAI error body (the traceback is logged)
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", kind="server_error"), status_code=500)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        return JSONResponse(error_body(str(exc.detail), code=str(exc.status_code)), status_code=exc.status_code)

    def check_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {settings.api_key}".encode()):
            raise ApiError(401, "incorrect or missing API key (send 'Authorization: Bearer <key>')",
                           code="invalid_api_key")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": settings.model_id, "running": scheduler.running, "queued": scheduler.queued,
                "completed": scheduler.completed, "cancelled": scheduler.cancelled}

    def model_card() -> dict:
        return {"id": settings.model_id, "object": "model", "created": int(time.time()), "owned_by": "edgedistill",
                "format": model.format, "context_length": model.context_length}

    @app.get("/v1/models")
    async def list_models(request: Request):
        check_key(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str, request: Request):
        check_key(request)
        if model_id != settings.model_id:
            raise ApiError(404, f"model '{model_id}' is not served here; this server serves '{settings.model_id}'",
                           param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_key(request)
        return await _respond(body, body.prompts(), body.max_tokens, chat=False, request=request)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        check_key(request)
        return await _respond(body, [body.messages], body.token_budget(), chat=True, request=request)

    async def _respond(body, raw_prompts: list, max_tokens: int | None, chat: bool, request: Request):
        body.refuse_unsupported()  # the cheap checks first, then tokenization
        stops = body.stop_strings()
        field = "messages" if chat else "prompt"
        prompts = [await _prepare(model, raw, field) for raw in raw_prompts]
        for prompt in prompts:
            if len(prompt.ids) > max_prompt_tokens:
                raise ApiError(400, f"the prompt has {len(prompt.ids)} tokens; this server accepts at most "
                                    f"{max_prompt_tokens}", param=field, code="context_length_exceeded")
        if max_tokens is not None and max_tokens > settings.max_tokens_limit:
            raise ApiError(400, f"max_tokens is {max_tokens}; this server allows at most {settings.max_tokens_limit}",
                           param="max_tokens")
        budget = max_tokens or settings.max_tokens_limit  # the context also ends generation ("length")
        score_prompt = body.logprob_count(chat) if getattr(body, "echo", False) else None
        if score_prompt is not None and body.stream:
            raise ApiError(400, "echo with logprobs (the prompt's log-probabilities) is answered whole; set stream: false",
                           param="echo")
        jobs = [(index * body.n + choice, prompt, body.sampling(choice, chat))
                for index, prompt in enumerate(prompts) for choice in range(body.n)]
        try:  # refuse bad sampling settings now, not after a streamed response has started
            SamplingParams(**{k: v for k, v in jobs[0][2].items() if k not in ("ignore_eos", "logprobs")})
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        echo = [model.decode(p.ids) if getattr(body, "echo", False) else "" for p in prompts]
        request_id, model_id = new_id("chatcmpl" if chat else "cmpl"), settings.model_id
        try:
            admission = scheduler.admit()
        except QueueFull:
            raise ApiError(429, f"the server is busy: {scheduler.running} running and {scheduler.queued} queued "
                                f"requests; retry shortly", kind="rate_limit_error", code="queue_full") from None
        generation = Generation(scheduler, admission, jobs, stops, budget, lambda token: model.decode([token]),
                                score_prompt)
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            shutdown = anyio.Event()  # set by sse-starlette on SIGTERM; the stream then has the grace period
            events = _sse_events(generation, request_id, model_id, chat, echo, body.n, include_usage,
                                 Deadline(shutdown, settings.shutdown_grace_s))
            return AdmittedEventStream(admission, events, sep="\n", ping=15, shutdown_event=shutdown,
                                       shutdown_grace_period=settings.shutdown_grace_s)
        try:
            choices = await _until_done_or_disconnect(generation, request, chat)
        finally:
            admission.release()  # also when cancelled before a model was taken
        for choice in choices:
            choice["text"] = echo[choice["index"] // body.n] + choice["text"]
            if score_prompt is not None:
                choice["logprobs"] = echo_logprobs(generation, choice["index"], choice["logprobs"],
                                                   len(echo[choice["index"] // body.n]))
        return completion_body(request_id, model_id, choices, generation.usage(), chat)

    return app


async def _prepare(model: Model, prompt, field: str) -> PreparedPrompt:
    """Tokenize (and render a chat) off the event loop; bad prompts are 400s."""
    try:
        prepared = await anyio.to_thread.run_sync(model.prepare, prompt)
    except ValueError as exc:
        raise ApiError(400, f"{field}: {exc}", param=field) from None
    if not prepared.ids:
        raise ApiError(400, f"{field}: the prompt is empty", param=field)
    return prepared


class Generation:
    """The choices of one request, decoded one after another on one model instance."""

    def __init__(self, scheduler: Scheduler, admission: Admission, jobs: list, stops: list[str], max_tokens: int,
                 token_text=str, score_prompt: int | None = None):
        self.scheduler, self.admission, self.jobs, self.stops, self.max_tokens = scheduler, admission, jobs, stops, max_tokens
        self.token_text = token_text  # id -> its text alone, for logprobs
        self.score_prompt = score_prompt  # alternatives per prompt token when echo asks for the prompt's logprobs
        self.prompt_scores: dict[int, tuple[list[int], list]] = {}  # choice -> (prompt ids, TokenLogprobs of ids[1:])
        self.finished: list[tuple[PreparedPrompt, Completion]] = []

    async def chunks(self) -> AsyncIterator[tuple[int, StreamChunk]]:
        """(choice index, chunk) for every choice in order, once a model instance is free;
        each choice's last chunk carries its Completion."""
        async with self.admission.model() as model:
            for index, prompt, sampling in self.jobs:
                if self.score_prompt is not None:
                    scores = await anyio.to_thread.run_sync(model.prompt_logprobs, prompt.ids, self.score_prompt)
                    self.prompt_scores[index] = (prompt.ids, scores)
                room = model.context_length - len(prompt.ids)
                # aclosing: leaving early (a disconnect) closes the worker's stream here and now, so the
                # model is given back only after its thread has stopped, never to a second request first
                async with aclosing(self.scheduler.stream(model, prompt, max_tokens=max(1, min(self.max_tokens, room)),
                                                          stop=self.stops, **sampling)) as chunks:
                    async for chunk in chunks:
                        if chunk.completion is not None:
                            self.finished.append((prompt, chunk.completion))
                        yield index, chunk

    def usage(self) -> dict:
        return usage(sum(len(p.ids) for p, _ in self.finished), sum(len(c.tokens) for _, c in self.finished))


def echo_logprobs(generation: Generation, index: int, generated: dict | None, echo_length: int) -> dict:
    """Completions logprobs of an echoed prompt followed by the generated tokens (whose
    text starts after the ``echo_length`` characters of the prompt's text): the first
    prompt token has none (no context), as in OpenAI's legacy completions."""
    ids, scores = generation.prompt_scores[index]
    prompt = logprobs_body(scores, generation.token_text, chat=False, text_offset=len(generation.token_text(ids[0])))
    first = generation.token_text(ids[0])
    tokens = [first, *prompt["tokens"]]
    generated = generated or {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    shift = echo_length
    return {"tokens": tokens + generated["tokens"],
            "token_logprobs": [None, *prompt["token_logprobs"], *generated["token_logprobs"]],
            "top_logprobs": [None, *prompt["top_logprobs"], *generated["top_logprobs"]],
            "text_offset": [0, *prompt["text_offset"], *(offset + shift for offset in generated["text_offset"])]}


async def _until_done_or_disconnect(generation: Generation, request: Request, chat: bool) -> list[dict]:
    """Collect every choice; a client that goes away cancels the generation."""
    choices, failures = [], []

    async def collect(scope: anyio.CancelScope) -> None:
        try:
            async with aclosing(generation.chunks()) as chunks:
                async for index, chunk in chunks:
                    if chunk.completion is not None:
                        choices.append({"index": index, "text": chunk.completion.text,
                                        "finish_reason": chunk.completion.finish_reason,
                                        "logprobs": logprobs_body(chunk.completion.logprobs, generation.token_text, chat)})
        except Exception as exc:  # raised below, outside the task group (which would wrap it in a group)
            failures.append(exc)
        scope.cancel()

    async def watch(scope: anyio.CancelScope) -> None:
        while not await request.is_disconnected():
            await anyio.sleep(0.1)
        scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(collect, group.cancel_scope)
        group.start_soon(watch, group.cancel_scope)
    if failures:
        if isinstance(failures[0], ApiError):
            raise failures[0]
        logger.error("generation failed", exc_info=failures[0])
        raise ApiError(500, f"generation failed: {failures[0]}", kind="server_error")
    if len(choices) < len(generation.jobs):  # the client left; nobody reads this answer
        raise ApiError(499, "the client closed the connection")
    return choices


class Deadline:
    """A stream's end during shutdown: the grace period from the signal, less a second to
    tell the client (an error event) before the connection is cut."""

    def __init__(self, shutdown: anyio.Event, grace_s: float):
        self.shutdown, self.grace_s, self.ends_at = shutdown, grace_s, None

    def passed(self) -> bool:
        if not self.shutdown.is_set():
            return False
        self.ends_at = self.ends_at or time.monotonic() + max(0.0, self.grace_s - 1.0)
        return time.monotonic() >= self.ends_at


async def _sse_events(generation: Generation, request_id: str, model_id: str, chat: bool, echo: list[str], n: int,
                      include_usage: bool, deadline: Deadline) -> AsyncIterator[dict]:
    """The SSE events of a streamed response."""
    try:
        started, offsets = set(), {}  # offsets: characters of token text streamed per choice (logprobs' text_offset)
        async with aclosing(generation.chunks()) as chunks:
            async for index, chunk in chunks:
                if deadline.passed():
                    raise ApiError(503, "the server is shutting down; this answer was cut short", kind="server_error",
                                   code="shutting_down")
                if index not in started:
                    started.add(index)
                    if chat:
                        yield _event(chunk_body(request_id, model_id, index, chat, text="", role="assistant"))
                    elif echo[index // n]:
                        yield _event(chunk_body(request_id, model_id, index, chat, text=echo[index // n]))
                logprobs = None
                if chunk.logprob is not None:  # sent with the token even while its text is held back
                    logprobs = logprobs_body([chunk.logprob], generation.token_text, chat, offsets.get(index, 0))
                    offsets[index] = offsets.get(index, 0) + len(generation.token_text(chunk.logprob.token))
                if chunk.text or logprobs is not None:
                    yield _event(chunk_body(request_id, model_id, index, chat, text=chunk.text, logprobs=logprobs))
                if chunk.completion is not None:
                    yield _event(chunk_body(request_id, model_id, index, chat, text=None if chat else "",
                                            finish_reason=chunk.completion.finish_reason))
        if include_usage:
            yield _event(usage_chunk(request_id, model_id, generation.usage(), chat))
        yield {"data": "[DONE]"}
    except ApiError as exc:  # headers are sent: the error travels as an event, then the stream ends
        yield _event(exc.body())
    except Exception as exc:  # a backend failure mid-stream: logged, and told to the client the same way
        logger.exception("generation failed")
        yield _event(error_body(f"generation failed: {exc}", kind="server_error"))


class AdmittedEventStream(EventSourceResponse):
    """An SSE response that gives its request's admission back however it ends, also
    when the client left before the body started (the event generator never ran)."""

    def __init__(self, admission: Admission, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.admission = admission

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.admission.release()


def _event(body: dict) -> dict:
    return {"data": json.dumps(body, ensure_ascii=False)}


def serve(path: str, host: str = "127.0.0.1", port: int = 8000, parallel: int = 1, threads: int | None = None,
          chat_template: str | None = None, log_level: str = "info", **settings) -> None:
    """Load ``parallel`` instances of the artifact at ``path`` and serve them until SIGTERM/SIGINT.

    ``settings``: the fields of :class:`ServerSettings` (``model_id`` defaults to the
    artifact's file or folder name).
    """
    from edgedistill.runtime import load

    check_can_listen(host, port)  # before loading models: a taken port is a one-line error, not uvicorn's exit 3
    threads = threads or max(1, (os.cpu_count() or 1) // parallel)
    models = [load(path, threads=threads, chat_template=chat_template) for _ in range(parallel)]
    settings.setdefault("model_id", Path(path).name)
    server_settings = ServerSettings(**settings)
    app = BodyLimit(create_app(models, server_settings), server_settings.max_body_bytes)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=int(server_settings.shutdown_grace_s) + 5)
    server = AnnouncingServer(config, f"{server_settings.model_id} ({models[0].format}, context {models[0].context_length})")
    # uvicorn drains on SIGTERM, then re-raises the signal to the handler it found: a no-op
    # handler makes a graceful stop exit 0 instead of dying by the signal.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
