"""``client.images``: OpenAI-compatible generations and edits, plus huabu's outpaint."""

from __future__ import annotations

import uuid
from typing import Any

from huabu.sdk._base import RequestOptions, Timeouts
from huabu.sdk._files import ImageInput, image_bytes, multipart_file
from huabu.sdk._jobs import prefer_wait
from huabu.sdk._params import (
    EditParams,
    GenerateParams,
    OutpaintParams,
    Unpack,
    request_options,
    split_params,
    wire_request,
)
from huabu.sdk._results import ImageResults
from huabu.sdk.resources._resource import AsyncResource, SyncResource
from huabu.sdk.types import (
    MAX_PREFER_WAIT_S,
    ImageEditRequest,
    ImageGenerationRequest,
    OutpaintRequest,
    encode_b64_image,
)


def _wire(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


# The request builders are shared by both surfaces. Validating with the wire types here reports a bad
# argument (InvalidParameterError, a ValueError) before anything is sent.


def generate_options(prompt: str, params: GenerateParams, timeouts: Timeouts) -> RequestOptions:
    """Sent with ``Prefer: wait`` (as long as the call may read, at most 60 s): the server answers with
    the images when they are ready by then, else with the job (202), which the client then follows,
    so a long generation never meets an HTTP timeout. The Idempotency-Key makes a retried call find
    the first call's job instead of starting a second one."""
    fields, call = split_params(params)
    body = wire_request(ImageGenerationRequest, prompt=prompt, **fields)
    return request_options(
        "POST",
        "/v1/images/generations",
        "images.generate",
        call,
        json=_wire(body),
        headers=prefer_wait(MAX_PREFER_WAIT_S, call, timeouts),
        idempotency_key=str(uuid.uuid4()),
    )


def edit_options(image: ImageInput, prompt: str, params: EditParams) -> RequestOptions:
    fields, call = split_params(params)
    mask = fields.pop("mask", None)
    body = wire_request(ImageEditRequest, prompt=prompt, **fields)
    files = {"image": multipart_file("image", image)}
    if mask is not None:
        files["mask"] = multipart_file("mask", mask)
    data = {key: str(value) for key, value in _wire(body).items()}
    return request_options("POST", "/v1/images/edits", "images.edit", call, data=data, files=files)


def outpaint_options(image: ImageInput, prompt: str, params: OutpaintParams) -> RequestOptions:
    fields, call = split_params(params)
    body = wire_request(OutpaintRequest, prompt=prompt, image=encode_b64_image(image_bytes(image)), **fields)
    return request_options("POST", "/v1/images/outpaint", "images.outpaint", call, json=_wire(body))


class Images(SyncResource):
    def generate(self, prompt: str, **params: Unpack[GenerateParams]) -> ImageResults:
        """Text to image (``POST /v1/images/generations``); blocks until the images are ready (a
        generation longer than ``Prefer: wait`` is followed as a job, within the call's ``timeout``)."""
        return self._client._images(generate_options(prompt, params, self._client.timeout))

    def edit(self, image: ImageInput, prompt: str, **params: Unpack[EditParams]) -> ImageResults:
        """Inpaint ``image`` where ``mask`` is transparent (see ``huabu.sdk.masks``), or img2img without mask."""
        return self._client._images(edit_options(image, prompt, params))

    def outpaint(self, image: ImageInput, prompt: str, **params: Unpack[OutpaintParams]) -> ImageResults:
        """Extend ``image`` by ``left``/``right``/``top``/``bottom`` pixels (see ``masks.extend``)."""
        return self._client._images(outpaint_options(image, prompt, params))


class AsyncImages(AsyncResource):
    async def generate(self, prompt: str, **params: Unpack[GenerateParams]) -> ImageResults:
        """Text to image (``POST /v1/images/generations``)."""
        return await self._client._images(generate_options(prompt, params, self._client.timeout))

    async def edit(self, image: ImageInput, prompt: str, **params: Unpack[EditParams]) -> ImageResults:
        """Inpaint ``image`` where ``mask`` is transparent, or img2img without mask."""
        return await self._client._images(edit_options(image, prompt, params))

    async def outpaint(self, image: ImageInput, prompt: str, **params: Unpack[OutpaintParams]) -> ImageResults:
        """Extend ``image`` by ``left``/``right``/``top``/``bottom`` pixels."""
        return await self._client._images(outpaint_options(image, prompt, params))
