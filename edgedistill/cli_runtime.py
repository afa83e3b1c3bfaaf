"""``edgedistill generate`` and ``edgedistill serve``: run or serve an exported student
through ``edgedistill.runtime`` (no torch for GGUF and ONNX). Registered on the app in
``cli.py``; the runtime's ValueError / FileNotFoundError become one-line errors, exit 2."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgedistill.errors import UserError


def generate(
    path: Path = typer.Argument(..., help="a GGUF file, an ONNX folder or an HF model folder (torch backend)"),
    prompt: str = typer.Argument(..., help="text to continue (with --chat: the user's message)"),
    chat: bool = typer.Option(False, "--chat", help="send PROMPT as a user message through the model's chat template"),
    chat_template: Optional[str] = typer.Option(None, "--chat-template",
                                                help="Jinja file or 'chatml', replacing the artifact's own template"),
    max_tokens: int = typer.Option(64, "--max-tokens", help="most tokens to generate"),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    top_k: int = typer.Option(0, "--top-k", help="0 = off"),
    top_p: float = typer.Option(1.0, "--top-p", help="1 = off"),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", help="1 = off"),
    stop: List[str] = typer.Option([], "--stop", help="end generation at this text (repeatable)"),
    seed: Optional[int] = typer.Option(None, help="sampling seed"),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads (default: all cores)"),
    stream: bool = typer.Option(False, "--stream", help="print tokens as they are decoded"),
    timings: bool = typer.Option(False, "--timings", help="print TTFT and tokens/s to stderr"),
) -> int:
    """Continue PROMPT with an exported student (no torch needed)."""
    from edgedistill.runtime import load

    options = dict(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   repetition_penalty=repetition_penalty, stop=stop, seed=seed)
    try:  # the runtime reports bad paths and arguments as ValueError / FileNotFoundError
        model = load(path, threads=threads, chat_template=_template_text(chat_template))
        chunks = model.stream([{"role": "user", "content": prompt}] if chat else prompt, **options)
        first = next(chunks)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    for chunk in itertools.chain([first], chunks):
        if stream:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
        if chunk.completion is not None:
            done = chunk.completion
    sys.stdout.write(("" if stream else done.text) + "\n")
    if timings:
        t = done.timings
        sys.stderr.write(f"{t.prompt_tokens} prompt tokens, {len(done.tokens)} generated ({done.finish_reason}); "
                         f"TTFT {t.ttft_s * 1000:.1f} ms, prefill {t.prefill_tokens_per_s:.0f} tok/s, "
                         f"decode {t.decode_tokens_per_s:.0f} tok/s\n")
    return 0


def serve(
    path: Path = typer.Argument(..., help="a GGUF file, an ONNX folder or an HF model folder (torch backend)"),
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback by default; 0.0.0.0 exposes it)"),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0 = any free port; the bound one is printed)"),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="EDGEDISTILL_API_KEY",
                                          help="require 'Authorization: Bearer KEY' on /v1/*"),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="id in /v1/models (default: the file or folder name)"),
    parallel: int = typer.Option(1, min=1, help="model instances decoding at once (memory grows with each)"),
    max_queue: int = typer.Option(64, "--max-queue", min=0, help="requests waiting for an instance; more get 429"),
    max_tokens_limit: int = typer.Option(1024, "--max-tokens-limit", min=1, help="largest max_tokens a request may ask"),
    max_prompt_tokens: int = typer.Option(0, "--max-prompt-tokens", min=0, help="longest prompt (0 = context - 1)"),
    chat_template: Optional[str] = typer.Option(None, "--chat-template",
                                                help="Jinja file or 'chatml', replacing the artifact's own template"),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads per instance (default: cores / parallel)"),
    shutdown_grace: float = typer.Option(30.0, "--shutdown-grace", help="seconds running requests get after SIGTERM"),
) -> int:
    """Serve a student over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions)."""
    try:
        from edgedistill.runtime.server import serve as run_server
    except ImportError as exc:
        raise UserError(f"the server needs the 'serve' extra ({exc.name} is missing): pip install 'edgedistill[serve]'") from None
    template = _template_text(chat_template)
    settings = dict(api_key=api_key, max_queue=max_queue, max_tokens_limit=max_tokens_limit,
                    max_prompt_tokens=max_prompt_tokens, shutdown_grace_s=shutdown_grace)
    if model_name:
        settings["model_id"] = model_name
    try:
        run_server(str(path), host=host, port=port, parallel=parallel, threads=threads, chat_template=template, **settings)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    return 0


def _template_text(option: Optional[str]) -> Optional[str]:
    """--chat-template: a builtin name (chatml) as is, else the Jinja file's text."""
    from edgedistill.runtime.chat import CHAT_TEMPLATES

    if not option or option in CHAT_TEMPLATES:
        return option
    if not Path(option).is_file():
        raise UserError(f"--chat-template {option}: no such file (give a Jinja file or one of: {', '.join(CHAT_TEMPLATES)})")
    return Path(option).read_text(encoding="utf-8")
