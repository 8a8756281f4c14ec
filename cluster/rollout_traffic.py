"""Simulated users for a rollout walkthrough: the traffic a canary needs before the policy can judge it.

Each worker thread plays random users (a sticky ``user`` id each, so the router assigns every user
to one variant), asks for an image from the synthetic caption language of the bundled models, and
answers for about half of its images through ``/v1/feedback``, keeping ~60 % of them. That feedback
is **simulated** (a coin, not a person), which the report says on its plots.

Used by ``huabu rollout traffic`` and ``examples/canary_rollout/canary_rollout.py``.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from types import TracebackType

from huabu.sdk import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    Client,
    HuabuError,
    NotFoundError,
    PermissionDeniedError,
)

COLORS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle"]
POSITIONS = ["on the left", "on the right", "at the top", "at the bottom"]
ZH = ["左边一个红色圆形", "右边一个蓝色正方形", "上面一个绿色三角形"]
FEEDBACK_SHARE = 0.5  # of images a simulated user answers for
ACCEPT_RATE = 0.6  # of answered images a simulated user keeps


def prompt(rng: random.Random) -> str:
    if rng.random() < 0.25:
        return rng.choice(ZH)
    return f"a {rng.choice(COLORS)} {rng.choice(SHAPES)} {rng.choice(POSITIONS)}"


@dataclass
class TrafficStats:
    requests: int = 0
    failed: int = 0
    feedback: int = 0
    errors: list[str] = field(default_factory=list)  # the last few, for the operator
    fatal: str | None = None  # a failure every further request would repeat (a bad key, a wrong URL)

    def line(self) -> str:
        last = f"; last error: {self.errors[-1]}" if self.errors else ""
        return f"{self.requests} requests ({self.failed} failed), {self.feedback} simulated feedback answers{last}"


class Traffic:
    """Worker threads sending simulated users' requests until ``stop()`` or ``max_requests``."""

    def __init__(
        self,
        client: Client,
        *,
        workers: int = 4,
        users: int = 200,
        denoise_steps: int | None = 8,
        size: str | None = None,
        max_requests: int | None = None,
    ) -> None:
        self.client, self.users, self.denoise_steps, self.size = client, users, denoise_steps, size
        self.max_requests = max_requests
        self.stats = TrafficStats()
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, args=(k,), daemon=True) for k in range(workers)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        self.done.set()
        for thread in self._threads:
            thread.join()

    def _claim(self) -> bool:
        with self._lock:
            if self.done.is_set() or (self.max_requests is not None and self.stats.requests >= self.max_requests):
                self.done.set()
                return False
            self.stats.requests += 1
            return True

    def _work(self, worker: int) -> None:
        rng = random.Random(worker)
        while self._claim():
            user = f"user-{rng.randrange(self.users)}"
            try:
                image = self.client.images.generate(
                    prompt(rng), user=user, steps=self.denoise_steps, size=self.size, seed=rng.randrange(2**31)
                )[0]
                if image.id and rng.random() < FEEDBACK_SHARE:
                    self.client.feedback.create(image_id=image.id, accepted=rng.random() < ACCEPT_RATE)
                    with self._lock:
                        self.stats.feedback += 1
            except APITimeoutError as exc:  # a slow moment, not a wrong setup
                self._failed(exc, fatal=False)
            except (AuthenticationError, PermissionDeniedError, NotFoundError, APIConnectionError) as exc:
                self._failed(exc, fatal=True)  # every request would fail the same way: stop at the first
            except HuabuError as exc:  # a failing canary shows up here until it is rolled back
                self._failed(exc, fatal=False)

    def _failed(self, exc: HuabuError, *, fatal: bool) -> None:
        with self._lock:
            self.stats.failed += 1
            self.stats.errors = [*self.stats.errors[-4:], str(exc)]
            if fatal:
                self.stats.fatal = self.stats.fatal or str(exc)
                self.done.set()
