"""A 503 + Retry-After, in huabu's error shape, for a request whose gateway replica died before it answered.

Ray 2.60's HTTP proxy maps an exception from the replica, ``RayActorError`` when the replica handling
the request is killed, to status 500 and sends nothing for it (``get_http_response_status`` and
``send_http_response_on_exception`` in ``ray/serve/_private/http_util.py`` answer only 408, 429 and
503 themselves); uvicorn then writes a plain-text ``500 Internal Server Error`` with no
``Retry-After``, though the request only needs sending again. No Serve setting changes that
mapping. Serve does wrap its proxy in the Starlette middlewares that the function named by
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` returns (read as each proxy actor starts), and
``serve_proxy_env`` (``cluster/local.py``) sets it to ``middlewares`` below for every cluster huabu
starts. An HTTP request the inner app returned from without starting a response is answered here.

What is left unchanged: any response the gateway started (its own 500s keep their status; a stream
cut mid-way stays cut: SSE clients resume with ``Last-Event-ID``), WebSockets, and a proxy that
raises (uvicorn's 500: a proxy bug is not a reason to retry).
"""

from __future__ import annotations

import json
import logging
from typing import Any

PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "huabu.cluster.serve_proxy:middlewares"
RETRY_AFTER_S = 1  # Serve starts a replacement; a second replica, if any, takes the retry at once
REQUEST_ID_HEADER = b"x-request-id"

logger = logging.getLogger("huabu.serve_proxy")

Message = dict[str, Any]

UNANSWERED_BODY = json.dumps(  # also HAProxy's error page in HAProxy mode (haproxy_launcher.py)
    {
        "error": {  # type and code first: a client that logs a prefix of the body still sees them
            "type": "service_unavailable",
            "code": "gateway_replica_lost",
            "message": (
                "the gateway replica handling this request stopped before answering (it is being replaced); "
                "retry: it may or may not have taken effect, so resend a job submission with the same "
                "Idempotency-Key"
            ),
        }
    }
).encode()


class AnswerWhenTheReplicaDied:
    """Pure ASGI (no response buffering): watches for ``http.response.start`` on the way out."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, receive, watch)
        if started:
            return
        # Serve's request-id middleware, inside this one, wrote the id into the scope's headers.
        request_id = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER, b"")
        logger.warning(
            "no response for %s %s (request %s): answering 503",
            scope.get("method"),
            scope.get("path"),
            request_id.decode(errors="replace"),
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(UNANSWERED_BODY)).encode()),
            (b"retry-after", str(RETRY_AFTER_S).encode()),
        ]
        if request_id:
            headers.append((REQUEST_ID_HEADER, request_id))
        # After a client disconnect (the proxy's 499) uvicorn drops these sends: nobody is listening.
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": UNANSWERED_BODY})


def middlewares() -> list[Any]:
    """The callback Serve's proxy calls (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``)."""
    from starlette.middleware import Middleware

    return [Middleware(AnswerWhenTheReplicaDied)]
