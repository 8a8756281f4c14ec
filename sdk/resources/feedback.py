"""``client.feedback``: tell the A/B experiment whether the user kept an image (``POST /v1/feedback``)."""

from __future__ import annotations

from huabu.sdk._base import RequestOptions
from huabu.sdk._params import CallOptions, Unpack, request_options, wire_request
from huabu.sdk.resources._resource import AsyncResource, SyncResource
from huabu.sdk.types import FeedbackRequest, FeedbackResponse


def feedback_options(image_id: str | None, job_id: str | None, accepted: bool, call: CallOptions) -> RequestOptions:
    body = wire_request(FeedbackRequest, image_id=image_id, job_id=job_id, accepted=accepted)
    return request_options(
        "POST", "/v1/feedback", "feedback.create", call, json=body.model_dump(mode="json", exclude_none=True)
    )


class Feedback(SyncResource):
    def create(
        self, *, accepted: bool, image_id: str | None = None, job_id: str | None = None, **call: Unpack[CallOptions]
    ) -> FeedbackResponse:
        options = feedback_options(image_id, job_id, accepted, call)
        return self._client._request_model(options, FeedbackResponse)


class AsyncFeedback(AsyncResource):
    async def create(
        self, *, accepted: bool, image_id: str | None = None, job_id: str | None = None, **call: Unpack[CallOptions]
    ) -> FeedbackResponse:
        options = feedback_options(image_id, job_id, accepted, call)
        return await self._client._request_model(options, FeedbackResponse)
