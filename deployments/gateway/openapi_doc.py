"""The OpenAPI document as the API really behaves, for clients, docs and the schemathesis fuzz test.

FastAPI derives the document from signatures, but the image and job routes read their bodies
themselves (strict content types, size limits), and every error is the OpenAI error body with
statuses FastAPI cannot see (401/403/413/415/429/...). This adds the request bodies from the wire
types in ``huabu.sdk.types``, the error responses each route can give, and bearer security."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from huabu.deployments.gateway.auth import required_scope
from huabu.sdk.types import (
    ErrorResponse,
    FeedbackRequest,
    ImageEditRequest,
    ImageGenerationRequest,
    JobRequest,
    OutpaintRequest,
)

REF = "#/components/schemas/{model}"
JSON_BODIES: dict[tuple[str, str], Any] = {
    ("post", "/v1/images/generations"): ImageGenerationRequest,
    ("post", "/v1/images/outpaint"): OutpaintRequest,
    ("post", "/v1/jobs"): JobRequest,
    ("post", "/v1/feedback"): FeedbackRequest,
}
COSTLY = {("post", p) for p in ("/v1/images/generations", "/v1/images/edits", "/v1/images/outpaint", "/v1/jobs")}
ERRORS = {
    "400": "invalid request: the message says what to fix",
    "401": "missing, invalid or revoked API key",
    "403": "the API key lacks the scope, or a signed URL is invalid or expired",
    "404": "no such route, model, job or key",
    "409": "conflict, e.g. a key name in use",
    "413": "request body too large",
    "415": "wrong content type",
    "422": "Idempotency-Key reused with a different body",
    "429": "rate limit, concurrency limit or daily quota reached: see Retry-After",
    "503": "overloaded or starting: see Retry-After",
}


def _schema(model: Any, components: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a wire type, its definitions moved into the components; a model by reference."""
    result: dict[str, Any] = TypeAdapter(model).json_schema(ref_template=REF)
    components.update(result.pop("$defs", {}))
    if result.get("type") == "object" and "title" in result:
        components[result["title"]] = result
        return {"$ref": REF.format(model=result["title"])}
    return result


def _multipart_edit(components: dict[str, Any]) -> dict[str, Any]:
    fields = ImageEditRequest.model_json_schema(ref_template=REF)
    components.update(fields.pop("$defs", {}))
    binary = {"type": "string", "format": "binary"}
    properties = {"image": binary, "mask": binary, **fields.get("properties", {})}
    return {"type": "object", "properties": properties, "required": ["image", *fields.get("required", [])]}


def _statuses(method: str, path: str) -> list[str]:
    statuses = ["400", "404"]
    if required_scope(path) is not None:
        statuses += ["401", "403"]
    if path.startswith("/v1/files/"):
        statuses.append("403")
    if method in ("post", "put", "patch"):
        statuses += ["413", "415"]
    if (method, path) in COSTLY:
        statuses += ["429", "503"]
    if (method, path) == ("post", "/v1/jobs"):
        statuses.append("422")
    if (method, path) == ("post", "/v1/admin/keys"):
        statuses.append("409")
    if path == "/v1/admin/rollouts" or path.startswith("/v1/admin/rollouts/"):
        statuses.append("409")
    return sorted(set(statuses))


def build_document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    error_ref = _schema(ErrorResponse, components)
    doc["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            if (method, path) in JSON_BODIES:
                schema = _schema(JSON_BODIES[method, path], components)
                op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
            if (method, path) == ("post", "/v1/images/edits"):
                body = {"multipart/form-data": {"schema": _multipart_edit(components)}}
                op["requestBody"] = {"required": True, "content": body}
            responses = op.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's validation body: huabu answers 400 with the error body
            for status in _statuses(method, path):
                responses[status] = {
                    "description": ERRORS[status],
                    "content": {"application/json": {"schema": error_ref}},
                }
            if required_scope(path) is not None:
                op["security"] = [{"apiKey": []}]
    _fix_content_types(doc)
    return doc


def _fix_content_types(doc: dict[str, Any]) -> None:
    """Routes that answer something other than JSON say so."""
    paths = doc.get("paths", {})
    png = {"image/png": {"schema": {"type": "string", "format": "binary"}}}
    sse = {"text/event-stream": {"schema": {"type": "string"}}}
    for path, content in (("/v1/files/{key}", png), ("/v1/jobs/{job_id}/events", sse)):
        if "get" in paths.get(path, {}):
            paths[path]["get"]["responses"]["200"]["content"] = content
    if "get" in paths.get("/readyz", {}):
        paths["/readyz"]["get"]["responses"]["503"] = {"description": "not ready", "content": {"application/json": {}}}


class OpenAPIDocument:
    """Replaces ``app.openapi``; built once per replica, on the first request for it."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def __call__(self) -> dict[str, Any]:
        if self.app.openapi_schema is None:
            self.app.openapi_schema = build_document(self.app)
        return self.app.openapi_schema


def install(app: FastAPI) -> None:
    app.openapi = OpenAPIDocument(app)  # type: ignore[method-assign]
