"""API resources, attached to the clients as attributes (``client.images``, ``client.jobs``, ...)."""

from huabu.sdk.resources.feedback import AsyncFeedback, Feedback
from huabu.sdk.resources.images import AsyncImages, Images
from huabu.sdk.resources.jobs import AsyncJobs, Jobs
from huabu.sdk.resources.keys import AsyncKeys, Keys
from huabu.sdk.resources.models import AsyncModels, Models
from huabu.sdk.resources.rollouts import AsyncRollouts, Rollouts
from huabu.sdk.resources.usage import AsyncUsage, Usage

__all__ = [
    "AsyncFeedback",
    "AsyncImages",
    "AsyncJobs",
    "AsyncKeys",
    "AsyncModels",
    "AsyncRollouts",
    "AsyncUsage",
    "Feedback",
    "Images",
    "Jobs",
    "Keys",
    "Models",
    "Rollouts",
    "Usage",
]
