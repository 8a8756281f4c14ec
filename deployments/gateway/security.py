"""HTTP hardening around the gateway's FastAPI app, as plain ASGI middleware:

- ``SecurityHeaders`` (outermost): configurable CORS, and nosniff / frame denial / referrer /
  CSP / no-store headers on every answer, errors included;
- ``RequestLimits``: the body-size limit enforced while reading (a chunked body without a
  Content-Length cannot slip past it) and strict content types on /v1 (JSON, multipart only
  for edits), before any handler parses anything. Image pixel limits (decompression bombs)
  are checked from image headers in ``images.py``;
- ``RedactSecrets``: a logging filter that masks API keys and bearer tokens in every record.

Settings come from ``app.state.access.settings`` (set by each Gateway replica at start)."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

from huabu.deployments.core.settings import GatewaySettings, SecuritySettings
from huabu.deployments.gateway.errors import APIError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_SCOPE_KEY = "huabu.body"  # the buffered request body, for middleware further in
MULTIPART_PATHS = frozenset({"/v1/images/edits"})
CORS_HEADERS = ["authorization", "content-type", "idempotency-key", "last-event-id", "traceparent", "x-request-id"]
EXPOSED_HEADERS = [
    "x-request-id",
    "traceparent",
    "retry-after",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
]
_DEFAULT_SECURITY = SecuritySettings()
_DEFAULT_GATEWAY = GatewaySettings()


def route_path(scope: Scope) -> str:
    """The path without the application's route prefix (Serve passes it as root_path)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def app_state(scope: Scope, name: str) -> Any:
    """``app.state.<name>`` of the application serving ``scope`` (None until a replica sets it)."""
    return getattr(getattr(scope.get("app"), "state", None), name, None)


def _settings(scope: Scope) -> Any:
    return getattr(app_state(scope, "access"), "settings", None)


async def send_error(scope: Scope, receive: Receive, send: Send, exc: APIError) -> None:
    """Answer with the OpenAI error body (HTTP), or refuse a WebSocket with close code 4000 + status."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 4000 + exc.status, "reason": exc.message[:120]})
        return
    await JSONResponse(exc.response_body(), status_code=exc.status, headers=exc.headers)(scope, receive, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._cors: tuple[tuple[str, ...], ASGIApp] | None = None

    def _with_cors(self, settings: SecuritySettings) -> ASGIApp:
        origins = tuple(settings.cors_origins)
        if not origins:
            return self.app
        if self._cors is None or self._cors[0] != origins:
            cors = CORSMiddleware(
                self.app,
                allow_origins=list(origins),
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=CORS_HEADERS,
                expose_headers=EXPOSED_HEADERS,
                allow_credentials=False,  # bearer keys, never cookies
                max_age=settings.cors_max_age_s,
            )
            self._cors = (origins, cors)
        return self._cors[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        all_settings = _settings(scope)
        settings: SecuritySettings = all_settings.security if all_settings is not None else _DEFAULT_SECURITY
        api = route_path(scope).startswith("/v1/") and not route_path(scope).startswith("/v1/files/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and settings.headers:
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if not headers.get("content-type", "").startswith("text/html"):
                    # API answers are data, never a document: nothing in them may load or run.
                    headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
                if api:
                    headers.setdefault("Cache-Control", "no-store")
                if settings.hsts:
                    headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
            await send(message)

        await self._with_cors(settings)(scope, receive, send_with_headers)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


class RequestLimits:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        settings = _settings(scope)
        limit = (settings.gateway if settings is not None else _DEFAULT_GATEWAY).max_request_bytes
        headers = Headers(scope=scope)
        too_large = APIError(f"request body is larger than {limit} bytes", status=413, code="request_too_large")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await send_error(scope, receive, send, too_large)
            return
        path = route_path(scope)
        has_body = (length.isdigit() and int(length) > 0) or "chunked" in headers.get("transfer-encoding", "")
        if has_body and path.startswith("/v1/"):
            problem = self._content_type_problem(path, headers.get("content-type", ""))
            if problem is not None:
                await send_error(scope, receive, send, problem)
                return
        # Read the body here, stopping at the limit, then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_error(scope, receive, send, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        scope[BODY_SCOPE_KEY] = body
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnects reach streaming handlers

        await self.app(scope, replay, send)

    @staticmethod
    def _content_type_problem(path: str, content_type: str) -> APIError | None:
        media = _media_type(content_type)
        if path in MULTIPART_PATHS:
            if media == "multipart/form-data":
                return None
            message = "send edits as multipart/form-data with an image file (and optional mask), "
            message += f"not {media or 'nothing'}"
        else:
            if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
                return None
            message = f"send the body as application/json, not {media or 'nothing'}"
        return APIError(message, status=415, code="unsupported_media_type")


# Keys ("hb_<id>_<secret>", "hb_dev_<secret>") and anything after "Bearer ": never in a log line.
_SECRET_RE = re.compile(r"(hb_[0-9a-z]{3,12}_)[A-Za-z0-9_\-]{16,}|((?i:bearer)\s+)[^\s\"',;]+")


def redact(text: str) -> str:
    return _SECRET_RE.sub(lambda m: (m.group(1) or m.group(2)) + "[REDACTED]", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_log_redaction() -> None:
    """Add the filter to every handler of the root and Ray Serve loggers (filters on a logger do
    not apply to records propagated from its children; filters on handlers do)."""
    for name in ("", "ray", "ray.serve"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())
