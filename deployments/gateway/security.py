"""HTTP hardening around the gateway's FastAPI app, as plain ASGI middleware:

- ``SecurityHeaders`` (outermost): configurable CORS, and nosniff / frame denial / referrer /
  CSP / no-store headers on every answer, errors included;
- ``RequestLimits``: the body-size limit enforced while reading (a chunked body without a
  Content-Length cannot slip past it), strict content types on /v1 (JSON, multipart only
  for edits) and one strict parse of every JSON body (``parse_json``: UTF-8, nesting depth,
  finite and bounded numbers, no lone surrogates), before any handler parses anything. Image
  pixel limits (decompression bombs) are checked from image headers in ``images.py``;
- ids at the edge: ``path_id_problem`` (job, API key and rollout ids in paths) and
  ``last_event_id``: odd bytes are a 4xx that says what to fix, never a store lookup or a 5xx;
- ``RedactSecrets``: a logging filter that masks API keys and bearer tokens in every record.

Settings come from ``app.state.access.settings`` (set by each Gateway replica at start)."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

from huabu.ab_testing._base import IDENTIFIER
from huabu.deployments.core.settings import GatewaySettings, SecuritySettings
from huabu.deployments.gateway.errors import APIError, invalid, not_found
from huabu.sdk.types import JOB_ID_PATTERN

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_SCOPE_KEY = "huabu.body"  # the buffered request body, for middleware further in
JSON_SCOPE_KEY = "huabu.json"  # the body parsed once by RequestLimits, for the routes
# Far deeper than any request model; Python's parser itself fails near its recursion limit (~1000).
MAX_JSON_DEPTH = 32
MAX_JSON_INT_DIGITS = 40  # above any int field's bound; Python refuses int() past 4,300 digits
MAX_EVENT_ID_DIGITS = 18  # below 2**63, so every store takes it as a list index
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


# --- JSON bodies -------------------------------------------------------------------------------------


class _Unacceptable(ValueError):
    """A JSON value the API refuses, raised from the parser's hooks with the message to show."""


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise _Unacceptable(f"a number in the request body has more than {MAX_JSON_INT_DIGITS} digits")
    return int(text)


def _too_deep() -> APIError:
    return invalid(f"the request body nests arrays or objects deeper than {MAX_JSON_DEPTH} levels")


def _check_tree(value: object) -> None:
    """Nesting depth, finite numbers and valid Unicode strings (keys too), without recursion; a
    problem names the value's dotted path, as validation errors do."""
    stack: list[tuple[object, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        name = ".".join(map(str, path)) or None
        if isinstance(item, float) and not math.isfinite(item):  # NaN, Infinity, 1e999: not numbers
            raise invalid(f"{name or 'the request body'} must be a finite number, got {item}", name)
        if isinstance(item, str) and not item.isascii():
            try:
                item.encode()
            except UnicodeEncodeError as exc:  # "\ud800" is valid JSON but no Unicode text
                raise invalid(
                    f"a string in {name or 'the request body'} contains a lone surrogate "
                    f"({item[exc.start]!r}); send valid Unicode text",
                    name,
                ) from None
        children = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for key, child in children:
            if len(path) >= MAX_JSON_DEPTH:
                raise _too_deep()
            stack.append((key, path))  # a key is checked as a string where its object is
            stack.append((child, (*path, key)))


def parse_json(body: bytes) -> object:
    """The body as JSON, or an APIError (400) that says what is wrong with it."""
    try:
        text = body.decode()  # strict UTF-8 (json.loads on bytes would also guess UTF-16/32)
    except UnicodeDecodeError as exc:
        raise invalid(f"the request body is not valid UTF-8 (byte {exc.start}); send JSON encoded as UTF-8") from None
    try:
        value = json.loads(text, parse_int=_bounded_int)
    except RecursionError:
        raise _too_deep() from None
    except json.JSONDecodeError as exc:
        raise invalid(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except _Unacceptable as exc:
        raise invalid(str(exc)) from None
    _check_tree(value)
    return value


def json_body(scope: Scope) -> object:
    """The JSON body ``RequestLimits`` parsed; a 400 when the request had none."""
    if JSON_SCOPE_KEY not in scope:
        raise invalid("the request body is empty; send a JSON object")
    return scope[JSON_SCOPE_KEY]


# --- ids -------------------------------------------------------------------------------------------

JOB_ID = re.compile(JOB_ID_PATTERN)  # as jobs.new_job_id makes them (and the SDK checks job_id)
KEY_ID = re.compile(r"[0-9a-f]{12}")  # as auth.new_key makes them
# Ids in paths, by the form their issuer gives them: anything else names nothing, so it is a 404
# here, never a store lookup (a crafted id such as "<job>:events" names another record).
_PATH_IDS = (  # (path, id form, what it names, parameter, the form in words)
    (re.compile(r"/v1/jobs/([^/]+)"), JOB_ID, "job", "job_id", "'job_' and 24 hex digits"),
    (re.compile(r"/v1/admin/keys/([^/]+)"), KEY_ID, "API key", "key_id", "12 hex digits"),
    (
        re.compile(r"/v1/admin/rollouts/([^/]+)"),
        IDENTIFIER,
        "rollout",
        "rollout_id",
        "1-128 letters, digits and . _ @ / + -, starting with a letter or digit",
    ),
)


def _shown(value: str, limit: int = 40) -> str:
    """A client's value in a message: quoted, and cut short."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")


def path_id_problem(path: str) -> APIError | None:
    """A 404 for an id in ``path`` that cannot be one (its form says so), else None."""
    for route, form, what, param, in_words in _PATH_IDS:
        match = route.match(path)
        if match and form.fullmatch(match.group(1)) is None:
            return not_found(f"no {what} {_shown(match.group(1))}: {what} ids are {in_words}", param)
    return None


def last_event_id(value: str | None) -> int:
    """The ``Last-Event-ID`` header as an event sequence number (-1: none, start from the first)."""
    if not value:
        return -1
    if len(value) > MAX_EVENT_ID_DIGITS or not (value.isascii() and value.isdigit()):
        raise invalid(
            f"Last-Event-ID must be the id of an event this stream sent (up to {MAX_EVENT_ID_DIGITS} "
            f"digits 0-9), got {_shown(value)}",
            "Last-Event-ID",
        )
    return int(value)


# --- middleware ------------------------------------------------------------------------------------


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
        if path.startswith("/v1/") and path not in MULTIPART_PATHS and body.strip():
            try:  # once, here: every JSON route (and any added later) gets the same strict parse
                scope[JSON_SCOPE_KEY] = parse_json(body)
            except APIError as exc:
                await send_error(scope, receive, send, exc)
                return
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
