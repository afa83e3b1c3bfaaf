"""``edgedistill serve`` as a measured process: started on a free 127.0.0.1 port, timed
from spawn to a healthy ``/health`` (cold start), its peak resident memory read from the
kernel (``VmHWM``, Linux) before it is stopped with SIGTERM."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from edgedistill.benchmarks.client import TargetError

ADDRESS = re.compile(r"serving .* on (http://[\d.]+:\d+)")


class ServedModel:
    """A server process over one artifact; use as a context manager.

    ``parallel`` model instances with ``threads`` CPU threads each; ``max_tokens_limit``
    must cover the benchmark's longest request."""

    def __init__(self, path: Path, name: str, parallel: int = 1, threads: int | None = None,
                 max_tokens_limit: int = 1024, start_timeout_s: float = 300.0):
        self.path, self.name = path, name
        command = [sys.executable, "-m", "edgedistill.cli", "serve", str(path), "--port", "0", "--model-name", name,
                   "--parallel", str(parallel), "--max-tokens-limit", str(max_tokens_limit), "--max-queue", "256"]
        if threads:
            command += ["--threads", str(threads)]
        started = time.perf_counter()
        # an inherited EDGEDISTILL_API_KEY would make the server refuse our unauthenticated requests
        env = {key: value for key, value in os.environ.items() if key != "EDGEDISTILL_API_KEY"}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env={**env, "PYTHONUNBUFFERED": "1"}, preexec_fn=_die_with_parent)
        self._stderr: list[str] = []
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()
        try:
            self.url = self._address(start_timeout_s) + "/v1"
            self._wait_healthy(start_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.load_s = time.perf_counter() - started

    def _drain_stderr(self) -> None:
        for line in self.process.stderr:  # uvicorn logs every request: keep only the tail
            self._stderr.append(line)
            del self._stderr[:-40]

    def _address(self, timeout_s: float) -> str:
        lines: queue.Queue = queue.Queue()

        def read() -> None:
            for line in self.process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                self.process.wait(10)
                self._drain.join(5)  # the last words of the process explain why it stopped
                raise TargetError(f"edgedistill serve {self.path} exited: {self.stderr_tail()}")
            if match := ADDRESS.search(line):
                return match.group(1)
        raise TargetError(f"edgedistill serve {self.path} did not start within {timeout_s:.0f}s: {self.stderr_tail()}")

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._drain.join(5)
                raise TargetError(f"edgedistill serve {self.path} exited: {self.stderr_tail()}")
            try:
                if httpx.get(self.url[:-3] + "/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TargetError(f"edgedistill serve {self.path} never answered /health: {self.stderr_tail()}")

    def stderr_tail(self) -> str:
        return " | ".join(" ".join(line.split()) for line in self._stderr[-3:] if line.strip()) or "no output"

    def peak_rss_bytes(self) -> int | None:
        """High-water mark of the process's resident memory so far (None off Linux)."""
        try:
            with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024  # kB
        except OSError:
            pass
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> "ServedModel":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the server process before it starts (Linux): SIGTERM it when the bench process
    dies, even by SIGKILL, so no server outlives an interrupted benchmark."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
