"""huabu.sdk: the typed Python client of huabu (画布).

>>> from huabu.sdk import Client
>>> client = Client()  # HUABU_BASE_URL / HUABU_API_KEY from the environment
>>> client.images.generate("一只在雪地里的红狐狸", seed=7)[0].save("fox.png")  # doctest: +SKIP

The wire models shared with the server are in ``huabu.sdk.types``; mask and outpaint helpers in
``huabu.sdk.masks``. This package never imports ray, torch or numpy.
"""

from huabu.sdk._base import APIResponseValidationError, Timeouts
from huabu.sdk._client import AsyncClient, Client
from huabu.sdk._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ContentPolicyViolationError,
    HuabuError,
    InternalServerError,
    InvalidParameterError,
    JobCanceledError,
    JobTimeoutError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UnprocessableEntityError,
)
from huabu.sdk._files import ImageInput
from huabu.sdk._jobs import AsyncJobHandle, JobHandle
from huabu.sdk._results import ImageResult, ImageResults
from huabu.sdk.types import ImagesResponse, Job, JobEvent, JobStatus, ModelInfo, ModelList

__all__ = [
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncJobHandle",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "ContentPolicyViolationError",
    "HuabuError",
    "ImageInput",
    "ImageResult",
    "ImageResults",
    "ImagesResponse",
    "InternalServerError",
    "InvalidParameterError",
    "Job",
    "JobCanceledError",
    "JobEvent",
    "JobHandle",
    "JobStatus",
    "JobTimeoutError",
    "ModelInfo",
    "ModelList",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "Timeouts",
    "UnprocessableEntityError",
]
