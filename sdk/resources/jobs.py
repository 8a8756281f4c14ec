"""``client.jobs``: submit work that outlives one HTTP request, follow it, reattach to it by id."""

from __future__ import annotations

from typing import Any

from huabu.sdk._files import ImageInput, image_bytes
from huabu.sdk._jobs import AnyJobRequest, AsyncJobHandle, JobHandle, submit_options
from huabu.sdk._params import (
    CallOptions,
    SubmitEditParams,
    SubmitGenerateParams,
    SubmitOutpaintParams,
    Unpack,
    split_params,
    wire_request,
)
from huabu.sdk.resources._resource import AsyncResource, SyncResource
from huabu.sdk.types import EditJobRequest, GenerateJobRequest, Job, OutpaintJobRequest, encode_b64_image


def _split(params: Any) -> tuple[dict[str, Any], CallOptions, str | None]:
    fields, call = split_params(params)
    fields.pop("wait", None)  # a header, not a field: see _wait
    return fields, call, fields.pop("idempotency_key", None)


def _wait(params: Any) -> int | None:
    wait: int | None = params.get("wait")
    return wait


def generate_job(prompt: str, params: SubmitGenerateParams) -> tuple[AnyJobRequest, CallOptions, str | None]:
    fields, call, key = _split(params)
    return wire_request(GenerateJobRequest, prompt=prompt, **fields), call, key


def edit_job(image: ImageInput, prompt: str, params: SubmitEditParams) -> tuple[AnyJobRequest, CallOptions, str | None]:
    fields, call, key = _split(params)
    mask = fields.pop("mask", None)
    body = wire_request(
        EditJobRequest,
        prompt=prompt,
        image=encode_b64_image(image_bytes(image)),
        mask=None if mask is None else encode_b64_image(image_bytes(mask)),
        **fields,
    )
    return body, call, key


def outpaint_job(
    image: ImageInput, prompt: str, params: SubmitOutpaintParams
) -> tuple[AnyJobRequest, CallOptions, str | None]:
    fields, call, key = _split(params)
    body = wire_request(OutpaintJobRequest, prompt=prompt, image=encode_b64_image(image_bytes(image)), **fields)
    return body, call, key


class Jobs(SyncResource):
    def submit(self, prompt: str, **params: Unpack[SubmitGenerateParams]) -> JobHandle:
        """Queue a text-to-image job and return at once with its handle (``POST /v1/jobs``); with
        ``wait=N`` the handle holds the finished job when it ended within N seconds."""
        body, call, key = generate_job(prompt, params)
        return self.create(body, idempotency_key=key, wait=_wait(params), **call)

    def submit_edit(self, image: ImageInput, prompt: str, **params: Unpack[SubmitEditParams]) -> JobHandle:
        """Queue an inpaint/img2img job (``mask``: transparent = repaint)."""
        body, call, key = edit_job(image, prompt, params)
        return self.create(body, idempotency_key=key, wait=_wait(params), **call)

    def submit_outpaint(self, image: ImageInput, prompt: str, **params: Unpack[SubmitOutpaintParams]) -> JobHandle:
        """Queue an outpaint job (``left``/``right``/``top``/``bottom`` pixels)."""
        body, call, key = outpaint_job(image, prompt, params)
        return self.create(body, idempotency_key=key, wait=_wait(params), **call)

    def create(
        self,
        request: AnyJobRequest,
        *,
        idempotency_key: str | None = None,
        wait: int | None = None,
        **call: Unpack[CallOptions],
    ) -> JobHandle:
        """Submit a ready-made wire request (``GenerateJobRequest`` / ``EditJobRequest`` / ``OutpaintJobRequest``);
        ``wait=N`` (``Prefer: wait=N``) answers with the finished job when it ends within N seconds."""
        response = self._client._request(submit_options(request, call, idempotency_key, wait, self._client.timeout))
        job = self._client._parse(response, Job)
        return JobHandle(self._client, job, request_id=response.headers.get("x-request-id"))

    def get(self, job_id: str, **call: Unpack[CallOptions]) -> JobHandle:
        """Reattach to a job by id (fetches it once, so an unknown id raises ``NotFoundError`` here)."""
        handle = JobHandle(self._client, job_id)
        handle.status(**call)
        return handle

    def cancel(self, job_id: str, **call: Unpack[CallOptions]) -> Job:
        return JobHandle(self._client, job_id).cancel(**call)


class AsyncJobs(AsyncResource):
    async def submit(self, prompt: str, **params: Unpack[SubmitGenerateParams]) -> AsyncJobHandle:
        body, call, key = generate_job(prompt, params)
        return await self.create(body, idempotency_key=key, wait=_wait(params), **call)

    async def submit_edit(self, image: ImageInput, prompt: str, **params: Unpack[SubmitEditParams]) -> AsyncJobHandle:
        body, call, key = edit_job(image, prompt, params)
        return await self.create(body, idempotency_key=key, wait=_wait(params), **call)

    async def submit_outpaint(
        self, image: ImageInput, prompt: str, **params: Unpack[SubmitOutpaintParams]
    ) -> AsyncJobHandle:
        body, call, key = outpaint_job(image, prompt, params)
        return await self.create(body, idempotency_key=key, wait=_wait(params), **call)

    async def create(
        self,
        request: AnyJobRequest,
        *,
        idempotency_key: str | None = None,
        wait: int | None = None,
        **call: Unpack[CallOptions],
    ) -> AsyncJobHandle:
        response = await self._client._request(
            submit_options(request, call, idempotency_key, wait, self._client.timeout)
        )
        job = self._client._parse(response, Job)
        return AsyncJobHandle(self._client, job, request_id=response.headers.get("x-request-id"))

    async def get(self, job_id: str, **call: Unpack[CallOptions]) -> AsyncJobHandle:
        handle = AsyncJobHandle(self._client, job_id)
        await handle.status(**call)
        return handle

    async def cancel(self, job_id: str, **call: Unpack[CallOptions]) -> Job:
        return await AsyncJobHandle(self._client, job_id).cancel(**call)
