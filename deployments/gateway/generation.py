"""The generation path shared by the synchronous endpoints and the job runner: wire request ->
validated model requests -> router -> storage -> ``ImagesResponse``.

Everything the model would reject is rejected here first, so bad input never reaches it."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from ray.serve.handle import DeploymentHandle

from huabu.deployments.backends.contract import ModelLimits
from huabu.deployments.backends.requests import InvalidRequest, SampleRequest, outpainting
from huabu.deployments.core import telemetry
from huabu.deployments.core.handles import call
from huabu.deployments.core.logging_json import request_id_var
from huabu.deployments.core.messages import (
    ContentBlocked,
    ModelOverloaded,
    ModelRequest,
    ModelResult,
    Operation,
    OutOfMemory,
    UnknownModel,
)
from huabu.deployments.core.result_cache import ResultCache, derived_seed
from huabu.deployments.core.settings import Settings
from huabu.deployments.core.storage import Storage
from huabu.deployments.gateway.errors import APIError, invalid, not_found, overloaded
from huabu.deployments.gateway.images import decode_image, decode_mask, image_size
from huabu.deployments.gateway.jobs import JobCancelled
from huabu.filters.failclosed import FilterUnavailable
from huabu.sdk.types import (
    EditJobRequest,
    GenerateJobRequest,
    ImageData,
    ImageEditRequest,
    ImageGenerationRequest,
    ImagesResponse,
    ModelInfo,
    ModelSampling,
    OutpaintJobRequest,
    OutpaintRequest,
    encode_b64_image,
    job_request_adapter,
)

if TYPE_CHECKING:
    from huabu.ab_testing import Assignment
    from huabu.deployments.gateway.experiments import Experiments

T = TypeVar("T")


def _within_limits(
    width: int,
    height: int,
    limits: ModelLimits,
    width_param: str,
    height_param: str,
    model: str,
    image: tuple[int, int] | None = None,
) -> None:
    """Refuse a final canvas wider or taller than the model paints, naming what made it so."""
    for side, value, param in (("width", width, width_param), ("height", height, height_param)):
        if value > limits.max_side:
            uploaded = f" (the image is {image[0]}x{image[1]} before {param} padding)" if image else ""
            raise invalid(
                f"the {side} would be {value} pixels{uploaded}; {model} paints at most {limits.max_side} pixels a side",
                param,
            )


# Edits without a mask restyle the whole image; this much of the schedule is re-run.
DEFAULT_IMG2IMG_STRENGTH = 0.75


def first_given(*values: T | None) -> T:
    """The first value that is set: the request's, else the operator's override, else the model's."""
    return next(v for v in values if v is not None)


def sampling_info(limits: ModelLimits) -> ModelSampling:
    """The model's defaults and limits as ``GET /v1/models`` lists them."""
    height, width = limits.default_size
    return ModelSampling(
        size=f"{width}x{height}",
        steps=limits.steps,
        guidance_scale=limits.guidance,
        max_steps=limits.max_steps,
        max_side=limits.max_side,
        size_multiple=limits.pixel_multiple,
        min_side=limits.smallest_side,
        max_prompt_bytes=limits.max_prompt_bytes,
        operations=list(limits.capabilities),
    )


class ModelCatalog:
    """Which models the router serves and their limits (for validation), fetched once."""

    def __init__(self, router: DeploymentHandle, settings: Settings) -> None:
        self.router = router
        self.settings = settings
        self._variants: dict[str, dict[str, Any]] | None = None
        self._limits: dict[str, ModelLimits] = {}

    async def variants(self) -> dict[str, dict[str, Any]]:
        if self._variants is None:
            variants: dict[str, dict[str, Any]] = await call(self.router, "describe")
            self._limits = {v["model"]: ModelLimits.from_dict(v["limits"]) for v in variants.values()}
            self._variants = variants
        return self._variants

    async def resolve(self, requested: str | None) -> tuple[str, ModelLimits]:
        """-> (the served model id, its limits) for a request's ``model``: the id itself, the
        reference its variant was configured with, or an own model's name without ``@version``."""
        variants = await self.variants()
        if requested is None:
            model_id = variants["stable"]["model"]
            return model_id, self._limits[model_id]
        for info in variants.values():
            if requested in (info["model"], info["name"], info["model"].split("@")[0]):
                return info["model"], self._limits[info["model"]]
        served = sorted(v["model"] for v in variants.values())
        raise APIError(
            f"model {requested!r} is not served here; available: {served}",
            "not_found_error",
            param="model",
            code="model_not_found",
            status=404,
        )

    async def model_ids(self) -> list[str]:
        return sorted({v["model"] for v in (await self.variants()).values()})

    async def models(self) -> list[ModelInfo]:
        """Every served model with its sampling defaults, as overridden by the gateway's settings."""
        variants = await self.variants()
        details = {info["model"]: info for info in variants.values()}
        gw = self.settings.gateway
        infos = []
        for model_id in await self.model_ids():
            sampling = sampling_info(self._limits[model_id])
            if gw.default_steps is not None:
                sampling.steps = gw.default_steps
            if gw.default_guidance is not None:
                sampling.guidance_scale = gw.default_guidance
            info = details[model_id]
            infos.append(
                ModelInfo(
                    id=model_id,
                    sampling=sampling,
                    backend=info.get("backend"),
                    pipeline=info.get("pipeline"),
                    dtype=info.get("dtype"),
                    transformer=info.get("transformer"),
                )
            )
        return infos


class GenerationService:
    def __init__(self, entry: DeploymentHandle, router: DeploymentHandle, storage: Storage, settings: Settings) -> None:
        self.entry = entry  # the first stage after the gateway (the cache, or the router itself)
        self.router = router
        self.storage = storage
        self.settings = settings
        self.catalog = ModelCatalog(router, settings)
        # Hits are answered here, before any other deployment (see deployments/core/result_cache.py).
        self.cache = ResultCache(settings) if settings.cache.enabled else None
        self.experiments: Experiments | None = None  # A/B assignment and metrics, set by the gateway
        self.on_results: Callable[[list[ModelRequest], list[ModelResult]], Awaitable[None]] | None = None

    # --- wire -> model requests -------------------------------------------------------------

    async def _serving(
        self, req: ImageGenerationRequest | ImageEditRequest | OutpaintRequest, job_id: str | None
    ) -> tuple[Assignment | None, str, ModelLimits]:
        """-> (the A/B assignment, the model that serves the request, its limits)."""
        # The A/B variant is chosen first: it decides the model, and so the limits and the cache key.
        assignment = await self.experiments.assign(req.model, req.user, job_id) if self.experiments else None
        model_id, limits = await self.catalog.resolve(assignment.model if assignment else req.model)
        return assignment, model_id, limits

    async def _base(
        self,
        req: ImageGenerationRequest | ImageEditRequest | OutpaintRequest,
        operation: Operation,
        size: tuple[int, int] | None,
        request_id: str,
        job_id: str | None,
        serving: tuple[Assignment | None, str, ModelLimits] | None = None,
    ) -> tuple[ModelRequest, ModelLimits, int | None]:
        """-> (request without its final seed, the serving model's limits, the user's seed)."""
        assignment, model_id, limits = serving if serving is not None else await self._serving(req, job_id)
        height, width = size if size is not None else limits.default_size
        gw = self.settings.gateway
        base = ModelRequest(
            operation=operation,
            prompt=req.prompt,
            negative_prompt=req.negative_prompt or "",
            seed=0,  # decided in _checked, once the request (and so its cache key) is complete
            height=height,
            width=width,
            steps=first_given(req.steps, gw.default_steps, limits.steps),
            guidance=first_given(req.guidance_scale, gw.default_guidance, limits.guidance),
            model=model_id,  # pinned, so the cache key names the version that serves it
            cache=req.cache,
            job_id=job_id,
            request_id=request_id,
            assignment=assignment,
            preview_every=getattr(req, "preview_every", None) or 0,  # jobs only
            priority=req.priority or ("batch" if job_id else "interactive"),
            cache_threshold=req.cache_steps.threshold if req.cache_steps else limits.cache_threshold,
        )
        return base, limits, req.seed

    def _pixel_cap(self, limits: ModelLimits) -> int:
        """The most pixels an uploaded image may have: what the serving model accepts, lowered by
        ``gateway.max_image_pixels`` when the operator set it lower."""
        return min(self.settings.gateway.max_image_pixels, limits.max_side**2)

    def _checked(self, base: ModelRequest, limits: ModelLimits, n: int, seed: int | None) -> list[ModelRequest]:
        """n requests with consecutive seeds, each validated against the serving model. An
        unseeded request gets a seed derived from its content (so the same prompt hits the
        cache), or a random one when it bypasses the cache."""
        if seed is None:
            seed = secrets.randbelow(2**31) if base.cache == "bypass" else derived_seed(base)
        requests = [replace(base, seed=(seed + i) % 2**63) for i in range(n)]
        try:
            for request in requests:
                request.to_sample().validate(limits)
        except InvalidRequest as exc:
            raise invalid(str(exc), exc.param) from None
        return requests

    async def generation_requests(
        self, req: ImageGenerationRequest, request_id: str, job_id: str | None = None
    ) -> list[ModelRequest]:
        size = req.dimensions
        base, limits, seed = await self._base(
            req, "generate", None if size is None else (size[1], size[0]), request_id, job_id
        )
        return self._checked(base, limits, req.n, seed)

    async def edit_requests(
        self, req: ImageEditRequest, image: bytes, mask: bytes | None, request_id: str, job_id: str | None = None
    ) -> list[ModelRequest]:
        # Every size check from the headers first: nothing is decoded for a request that is refused.
        width, height = image_size(image, "image")
        if req.dimensions is not None and req.dimensions != (width, height):
            raise invalid(
                f"size {req.size} differs from the image's {width}x{height}; omit size for edits or resize the image",
                "size",
            )
        serving = await self._serving(req, job_id)
        limits = serving[2]
        _within_limits(width, height, limits, "image", "image", serving[1])
        mask_size = image_size(mask, "mask") if mask is not None else (width, height)
        if mask_size != (width, height):
            raise invalid(
                f"mask is {mask_size[0]}x{mask_size[1]} but the image is {width}x{height}: they must be the same size",
                "mask",
            )
        cap = self._pixel_cap(limits)
        # Decoding takes the CPU for a while: off the event loop, which also renews job leases.
        pixels, alpha_mask = await asyncio.to_thread(decode_image, image, "image", cap)
        repaint = await asyncio.to_thread(decode_mask, mask, cap, pixels.shape[:2]) if mask is not None else alpha_mask
        base, limits, seed = await self._base(req, "edit", pixels.shape[:2], request_id, job_id, serving)
        strength = (
            req.strength if req.strength is not None else (1.0 if repaint is not None else DEFAULT_IMG2IMG_STRENGTH)
        )
        return self._checked(replace(base, image=pixels, mask=repaint, strength=strength), limits, req.n, seed)

    async def outpaint_requests(
        self, req: OutpaintRequest, request_id: str, job_id: str | None = None
    ) -> list[ModelRequest]:
        image = await asyncio.to_thread(req.image_bytes)  # base64 of up to the body limit
        width, height = image_size(image, "image")
        serving = await self._serving(req, job_id)
        limits = serving[2]
        _within_limits(width, height, limits, "image", "image", serving[1])
        # The canvas the model would paint, checked before it is allocated.
        _within_limits(
            width + req.left + req.right,
            height + req.top + req.bottom,
            limits,
            "right" if req.right >= req.left else "left",
            "bottom" if req.bottom >= req.top else "top",
            serving[1],
            (width, height),
        )
        pixels, _ = await asyncio.to_thread(decode_image, image, "image", self._pixel_cap(limits))

        def grow() -> SampleRequest:
            return outpainting(
                req.prompt, pixels, left=req.left, right=req.right, top=req.top, bottom=req.bottom, seed=0
            )

        try:
            grown = await asyncio.to_thread(grow)
        except InvalidRequest as exc:
            raise invalid(str(exc), exc.param) from None
        base, limits, seed = await self._base(req, "outpaint", (grown.height, grown.width), request_id, job_id, serving)
        return self._checked(replace(base, image=grown.init_image, mask=grown.mask), limits, req.n, seed)

    # --- model requests -> response ----------------------------------------------------------

    async def run(self, requests: list[ModelRequest], response_format: str) -> tuple[ImagesResponse, str | None]:
        telemetry.carry(requests)  # the next stage's span is a child of this request's span
        try:
            call = asyncio.gather(*(self._generate(r, with_png=response_format == "b64_json") for r in requests))
            results: list[ModelResult] = await (self.experiments.track(requests, call) if self.experiments else call)
        except OutOfMemory as exc:  # its message says what to change (a smaller size, fewer images)
            raise overloaded(self.settings.model.retry_after_s, message=str(exc)) from None
        except ModelOverloaded:
            raise overloaded(self.settings.model.retry_after_s) from None
        except FilterUnavailable as exc:  # a safety filter could not screen it: refused, never passed on
            raise APIError(
                str(exc),
                "service_unavailable",
                code="filter_unavailable",
                status=503,
                headers={"Retry-After": str(exc.retry_after_s)},
            ) from None
        except ContentBlocked as exc:
            what = "prompt" if exc.stage != "image" else "generated image"
            raise APIError(
                f"the {what} was blocked by the content policy ({exc.category})",
                "content_policy_violation",
                param="prompt" if exc.stage != "image" else None,
                code=exc.category,
                status=400,
            ) from None
        except UnknownModel as exc:
            raise not_found(f"model {exc} is not served here", "model") from None
        if any(r.cancelled for r in results):
            raise JobCancelled
        images = asyncio.gather(*(self._image_data(r, response_format) for r in results))
        if self.on_results is not None:  # usage metering (deployments/gateway/access.py), while images are read
            await asyncio.gather(self.on_results(requests, results), images)
        data = await images
        return ImagesResponse(created=int(time.time()), data=list(data)), results[0].variant

    async def _generate(self, request: ModelRequest, with_png: bool) -> ModelResult:
        if self.cache is None or request.cache == "bypass":
            bypassed: ModelResult = await call(self.entry, "generate", request)
            return bypassed
        key = self.cache.key(request)
        if request.cache == "use":
            hit = await self.cache.hit(request, key)
            if hit is not None:
                if with_png and not hit.png and hit.storage_key:
                    # Read once, then kept with the entry: the next hit needs no storage round trip.
                    hit = replace(hit, png=await self.storage.get(hit.storage_key) or b"")
                    self.cache.attach_png(key, hit.png)
                return hit
            request = replace(request, looked_up=True)
        result: ModelResult = await call(self.entry, "generate", request)
        self.cache.remember(key, result)  # screened and stored by the stages behind this one
        return result

    async def _image_data(self, result: ModelResult, response_format: str) -> ImageData:
        key = result.storage_key or await self.storage.put(result.png)
        common: dict[str, Any] = {
            "id": key.removesuffix(".png"),
            "seed": result.seed,
            "model": result.model,
            "cached": result.cached,
            "prompt_truncated": result.prompt_truncated,
            "variant": result.variant,
            "full_evaluations": result.full_evaluations,
            "metadata": {"batch_size": str(result.batch_size), "generation_s": f"{result.generation_s:.3f}"},
        }
        if response_format == "url":
            return ImageData(url=self.storage.url(key), **common)
        png = result.png or await self.storage.get(key)
        if not png:
            raise APIError("a cached image is missing from storage; retry with cache=refresh", "server_error")
        return ImageData(b64_json=encode_b64_image(png), **common)

    async def job_requests(
        self, req: GenerateJobRequest | EditJobRequest | OutpaintJobRequest, request_id: str, job_id: str | None
    ) -> list[ModelRequest]:
        """The model requests of a job body, validated (used at submit time and when it runs)."""
        if isinstance(req, GenerateJobRequest):
            return await self.generation_requests(req, request_id, job_id)
        if isinstance(req, EditJobRequest):
            image, mask = await asyncio.to_thread(lambda: (req.image_bytes(), req.mask_bytes()))
            return await self.edit_requests(req, image, mask, request_id, job_id)
        return await self.outpaint_requests(req, request_id, job_id)

    async def run_job(self, job_id: str, request_json: str, attempt: int = 1) -> tuple[ImagesResponse, str | None]:
        req = job_request_adapter.validate_json(request_json)
        # A runner's attempt is its own request (telemetry.job); one run inline keeps its caller's id.
        requests = await self.job_requests(req, request_id_var.get() or job_id, job_id)
        if attempt > 1:
            requests = [replace(r, retry=True) for r in requests]
        return await self.run(requests, req.response_format)
