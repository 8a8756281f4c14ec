"""``Client`` and ``AsyncClient``: the same surface; they differ only in how they do I/O.

All decisions (retries, backoff, deadlines, errors, tracing, request building, parsing) are in
``_base.BaseClient`` and the resource modules; here each client only drives the shared retry plan with
blocking or awaiting calls.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, TypeVar

import anyio
import httpx
import pydantic

from huabu.sdk._base import BaseClient, RequestOptions, _Send, _Sleep
from huabu.sdk._jobs import AsyncJobHandle, JobHandle
from huabu.sdk._results import ImageResults
from huabu.sdk.resources import (
    AsyncFeedback,
    AsyncImages,
    AsyncJobs,
    AsyncKeys,
    AsyncModels,
    AsyncRollouts,
    AsyncUsage,
    Feedback,
    Images,
    Jobs,
    Keys,
    Models,
    Rollouts,
    Usage,
)
from huabu.sdk.types import ImagesResponse, Job

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)
_Self = TypeVar("_Self", bound="Client")
_ASelf = TypeVar("_ASelf", bound="AsyncClient")
# The resources each client carries as attributes, in the order both clients list their classes.
RESOURCES = ("images", "jobs", "models", "feedback", "usage", "keys", "rollouts")


class Client(BaseClient[httpx.Client]):
    """Synchronous huabu client.

    >>> client = Client()  # HUABU_BASE_URL / HUABU_API_KEY, else http://127.0.0.1:8000
    >>> client.images.generate("a red fox in snow", seed=7)[0].save("fox.png")  # doctest: +SKIP
    """

    images: Images
    jobs: Jobs
    models: Models
    feedback: Feedback
    usage: Usage
    keys: Keys  # admin scope
    rollouts: Rollouts  # admin scope

    _http_class = httpx.Client
    _resources: ClassVar = dict(zip(RESOURCES, (Images, Jobs, Models, Feedback, Usage, Keys, Rollouts), strict=True))

    # --- I/O ------------------------------------------------------------------------------------

    @staticmethod
    def _sleep(seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def _request(self, options: RequestOptions, *, stream: bool = False) -> httpx.Response:
        plan = self._plan(options)
        try:
            step = next(plan)
            while True:
                if isinstance(step, _Sleep):
                    self._sleep(step.seconds)
                    step = plan.send(None)
                    continue
                assert isinstance(step, _Send)
                try:
                    response = self._http.send(step.request, stream=stream)
                    if stream and response.is_error:
                        response.read()  # the error body is needed for the exception
                except httpx.TransportError as exc:
                    step = plan.send(exc)
                else:
                    step = plan.send(response)
        except StopIteration as done:
            result: httpx.Response = done.value
            return result
        finally:
            plan.close()

    def _request_model(self, options: RequestOptions, model: type[ModelT]) -> ModelT:
        return self._parse(self._request(options), model)

    def _download(self, url: str) -> bytes:
        return self._request(RequestOptions("GET", url, operation="images.download", headers={"Accept": "*/*"})).content

    def _results(
        self, response: ImagesResponse, *, request_id: str | None = None, job_id: str | None = None
    ) -> ImageResults:
        return ImageResults(response, loader=self._download, request_id=request_id, job_id=job_id)

    def _images(self, options: RequestOptions) -> ImageResults:
        started = self._clock()
        response = self._request(options)
        if response.status_code == 202:  # Prefer: wait ran out and the job goes on: follow it to its images
            handle = JobHandle(self, self._parse(response, Job), request_id=response.headers.get("x-request-id"))
            return handle.result(timeout=self._follow_timeout(options, started))
        return self._images_of(response)

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r})"


class AsyncClient(BaseClient[httpx.AsyncClient]):
    """Asynchronous huabu client: ``Client``'s surface with ``await`` (and ``async for`` over events)."""

    images: AsyncImages
    jobs: AsyncJobs
    models: AsyncModels
    feedback: AsyncFeedback
    usage: AsyncUsage
    keys: AsyncKeys  # admin scope
    rollouts: AsyncRollouts  # admin scope

    _http_class = httpx.AsyncClient
    _resources: ClassVar = dict(
        zip(
            RESOURCES,
            (AsyncImages, AsyncJobs, AsyncModels, AsyncFeedback, AsyncUsage, AsyncKeys, AsyncRollouts),
            strict=True,
        )
    )

    # --- I/O ------------------------------------------------------------------------------------

    @staticmethod
    async def _sleep(seconds: float) -> None:
        if seconds > 0:
            await anyio.sleep(seconds)

    async def _request(self, options: RequestOptions, *, stream: bool = False) -> httpx.Response:
        plan = self._plan(options)
        try:
            step = next(plan)
            while True:
                if isinstance(step, _Sleep):
                    await self._sleep(step.seconds)
                    step = plan.send(None)
                    continue
                assert isinstance(step, _Send)
                try:
                    response = await self._http.send(step.request, stream=stream)
                    if stream and response.is_error:
                        await response.aread()
                except httpx.TransportError as exc:
                    step = plan.send(exc)
                else:
                    step = plan.send(response)
        except StopIteration as done:
            result: httpx.Response = done.value
            return result
        finally:
            plan.close()

    async def _request_model(self, options: RequestOptions, model: type[ModelT]) -> ModelT:
        return self._parse(await self._request(options), model)

    async def _download(self, url: str) -> bytes:
        options = RequestOptions("GET", url, operation="images.download", headers={"Accept": "*/*"})
        return (await self._request(options)).content

    def _results(
        self, response: ImagesResponse, *, request_id: str | None = None, job_id: str | None = None
    ) -> ImageResults:
        return ImageResults(response, aloader=self._download, request_id=request_id, job_id=job_id)

    async def _images(self, options: RequestOptions) -> ImageResults:
        started = self._clock()
        response = await self._request(options)
        if response.status_code == 202:
            handle = AsyncJobHandle(self, self._parse(response, Job), request_id=response.headers.get("x-request-id"))
            return await handle.result(timeout=self._follow_timeout(options, started))
        return self._images_of(response)

    # --- lifecycle ------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self: _ASelf) -> _ASelf:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient(base_url={self.base_url!r})"
