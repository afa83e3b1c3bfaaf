"""What every client of an OpenAI-compatible API here shares (the data generator, the API
teacher, the bench's measuring client): the base-URL check, the HTTP client with its
auth header and timeouts, retries with backoff, and the server's error as one line.

Retries: connection errors, 408/409/429 and 5xx are retried with exponential backoff
(``backoff_s * 2**attempt``, capped at 30 s; a ``Retry-After`` header in seconds is
honoured up to the same cap); any other status fails at once. 401/403/404 and running out
of retries are *systemic* (the API itself looks wrong, not this request), so a caller
sending many requests can stop early instead of retrying every one.
"""

from __future__ import annotations

import json
import time

import httpx

from edgedistill.errors import UserError
from edgedistill.text_stats import one_line

RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504})
SYSTEMIC = frozenset({401, 403, 404})  # wrong key, model or URL: every other request fails the same way
MAX_BACKOFF_S = 30.0
CONNECT_TIMEOUT_S = 10.0


class ApiError(Exception):
    """A request that failed for good (not retryable, or out of retries). ``systemic``: the
    API itself looks wrong (unreachable, 5xx/429 after retries, 401/403/404), not this request."""

    def __init__(self, message: str, systemic: bool = False):
        super().__init__(message)
        self.systemic = systemic


def check_base_url(url: str, key: str = "teacher_api.url") -> None:
    """Refuse what is not an http(s) URL with a host (a UserError naming ``key``), before
    anything is sent."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UserError(f"{key} '{url}' is not a URL ({exc}); give the API's base URL, e.g. http://host:8000/v1") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UserError(f"{key} '{url}' is not an http(s) URL with a host; give the API's base URL, "
                        "e.g. http://host:8000/v1")


def http_client(api_key: str | None = None, timeout_s: float = 300.0) -> httpx.Client:
    """An HTTP client sending ``Authorization: Bearer`` when there is a key; ``timeout_s``
    bounds each read (a long generation), connecting is bounded separately."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S))


def endpoint(base_url: str, path: str) -> str:
    """``base_url`` (ending in ``/v1``, with or without a slash) joined with ``path``."""
    return f"{base_url.rstrip('/')}/{path.lstrip('/')}"


def post_json(client: httpx.Client, url: str, body: dict, retries: int, backoff_s: float) -> httpx.Response:
    """POST ``body`` until a 200 comes back (that response is returned), retrying what
    :data:`RETRYABLE` names; raises :class:`ApiError` otherwise."""
    reason = ""
    for attempt in range(retries + 1):
        wait = min(MAX_BACKOFF_S, backoff_s * 2 ** attempt)
        try:
            response = client.post(url, json=body)
        except httpx.HTTPError as exc:
            reason = f"cannot reach {url}: {one_line(str(exc)) or type(exc).__name__}"
        else:
            if response.status_code == 200:
                return response
            reason = f"HTTP {response.status_code}: {error_message(response)}"
            if response.status_code not in RETRYABLE:
                raise ApiError(reason, systemic=response.status_code in SYSTEMIC)
            wait = max(wait, min(MAX_BACKOFF_S, retry_after_s(response)))
        if attempt < retries:
            time.sleep(wait)
    raise ApiError(f"gave up after {retries + 1} attempts; last: {reason}", systemic=True)


def retry_after_s(response: httpx.Response) -> float:
    """The ``Retry-After`` header in seconds (0 when absent or an HTTP date: our own backoff applies)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "0")))
    except ValueError:
        return 0.0


def error_message(response: httpx.Response) -> str:
    """What a failing server said, as one short line: the OpenAI-style ``error.message``
    when there is one, else the body's text (an HTML page, a traceback) squeezed."""
    response.read()
    try:
        body = response.json()
    except (json.JSONDecodeError, ValueError):
        return one_line(response.text, 200) or response.reason_phrase
    return body_error(body)


def body_error(body) -> str:
    """The error a JSON body (a response, or an event of a stream) carries, as one line."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return one_line(str(error.get("message", error)))
    return one_line(str(error or body))

