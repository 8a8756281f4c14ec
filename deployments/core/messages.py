"""Typed objects passed between deployments (pickled by Ray): one image request to the model, its
result, and the errors a stage raises for the gateway to answer. The HTTP wire types live in
``huabu.sdk.types``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from huabu.ab_testing.assignment import Assignment
from huabu.deployments.backends.requests import SampleRequest
from huabu.filters import Decision
from huabu.sdk.types import CacheMode, Priority

Operation = Literal["generate", "edit", "outpaint"]


@dataclass
class ModelRequest:
    operation: Operation
    prompt: str
    seed: int
    height: int
    width: int
    steps: int
    guidance: float
    negative_prompt: str = ""
    image: np.ndarray | None = field(default=None, repr=False)  # (H, W, 3) uint8 canvas
    mask: np.ndarray | None = field(default=None, repr=False)  # (H, W) bool, True = repaint
    strength: float = 1.0
    model: str | None = None  # the name@version that must serve it; None = the router's choice
    cache: CacheMode = "use"
    # The gateway looked this request up in the cache just before and missed: the cache stage
    # need not read the index again.
    looked_up: bool = False
    job_id: str | None = None  # progress and cancellation go to this job
    # A job's second or later attempt: the cache stage never has it wait on a call already in
    # flight for the same image, which may be the very call that was lost.
    retry: bool = False
    request_id: str = ""
    # W3C traceparent of the calling stage's span: each deployment's span is its child (telemetry.hop).
    traceparent: str | None = None
    # The A/B assignment that chose ``model`` (None: no experiment); carried for metrics and traces.
    assignment: Assignment | None = None
    preview_every: int = 0  # a job's previews: one every this many steps (0: none)
    priority: Priority = "interactive"  # model.scheduler step: interactive requests go first
    cache_threshold: float = 0.0  # step caching (cache_steps.threshold); 0 = off

    @property
    def variant(self) -> str | None:
        return self.assignment.variant if self.assignment is not None else None

    def to_sample(self) -> SampleRequest:
        return SampleRequest(
            prompt=self.prompt,
            seed=self.seed,
            height=self.height,
            width=self.width,
            steps=self.steps,
            guidance=self.guidance,
            negative_prompt=self.negative_prompt,
            init_image=self.image,
            mask=self.mask,
            strength=self.strength,
            preview_every=self.preview_every,
            cache_threshold=self.cache_threshold,
        )


@dataclass
class ModelResult:
    png: bytes
    seed: int
    model: str  # name@version that made it
    prompt_truncated: bool
    cancelled: bool = False
    variant: str | None = None
    batch_size: int = 1
    queue_wait_s: float = 0.0
    generation_s: float = 0.0
    cached: bool = False
    storage_key: str | None = None  # set once the PNG is in storage
    full_evaluations: int | None = None  # step caching: transformer branch evaluations that ran every block


class ModelOverloaded(Exception):
    """Every replica of the chosen model is busy and its queue is full (the router raises it)."""


class OutOfMemory(ModelOverloaded):
    """A batch did not fit in the replica's GPU memory; the replica serves on (the model raises it).
    Its message tells the caller what to change."""


class UnknownModel(LookupError):
    """No variant serves the model a request pinned (the router raises it)."""


class ContentBlocked(Exception):
    """A prompt or an image was blocked by policy (it carries no prompt text)."""

    def __init__(self, stage: str, category: str, rule_id: str | None, fingerprint: str | None) -> None:
        super().__init__(f"{stage} blocked: {category}")
        self.stage = stage
        self.category = category
        self.rule_id = rule_id
        self.fingerprint = fingerprint

    @classmethod
    def from_decision(cls, decision: Decision) -> ContentBlocked:
        category = decision.category.value if decision.category is not None else "unsafe"
        return cls(decision.stage.value, category, decision.rule_id, decision.fingerprint)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across Ray with all fields
        return (ContentBlocked, (self.stage, self.category, self.rule_id, self.fingerprint))
