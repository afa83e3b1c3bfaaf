"""HTTP plumbing under the OpenAI API, independent of it: probing that an address can be
bound, announcing the bound address, and capping the request body before any parsing."""

from __future__ import annotations

import json
import socket

import uvicorn

from edgedistill.runtime.openai_api import error_body


def check_can_listen(host: str, port: int) -> None:
    """Bind and release ``host:port`` as uvicorn will, so a taken port is a one-line error."""
    if not 0 <= port <= 65535:  # socket raises OverflowError, not OSError, out of range
        raise ValueError(f"port {port} is outside 0-65535; pick another --port")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or --host") from None


class AnnouncingServer(uvicorn.Server):
    """Prints the bound address once listening (``--port 0`` picks a free port)."""

    def __init__(self, config: uvicorn.Config, what: str):
        super().__init__(config)
        self.what = what

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"serving {self.what} on http://{host}:{port}", flush=True)


class BodyLimit:
    """ASGI middleware: reads the request body up to ``limit`` bytes and answers 413 beyond
    it, before any JSON parsing; the app then reads the buffered body."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._too_large(send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # then the client's disconnect, when it comes

        await self.app(scope, replay, send)

    async def _too_large(self, send) -> None:
        payload = json.dumps(error_body(f"the request body is over {self.limit} bytes; send a shorter prompt",
                                        code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
