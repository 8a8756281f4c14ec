"""API resources, attached to the clients as attributes (``client.images``, ``client.jobs``, ...)."""

from huabu.sdk.resources.feedback import AsyncFeedback, Feedback
from huabu.sdk.resources.images import AsyncImages, Images
from huabu.sdk.resources.jobs import AsyncJobs, Jobs
from huabu.sdk.resources.models import AsyncModels, Models

__all__ = ["AsyncFeedback", "AsyncImages", "AsyncJobs", "AsyncModels", "Feedback", "Images", "Jobs", "Models"]
