"""Which jobs still owe a result message, durably: written before a message's offset is committed,
removed once its result is on the results topic.

Every ingress replica publishes the results of any of its group's finished jobs (a replacement
replica, or another member, finishes what a dead one left), each job under a short lease so that
two replicas rarely publish one result. Rarely, not never: a result is at-least-once, and its
``id`` (the job's) is stable, so consumers drop repeats by id."""

from __future__ import annotations

from pydantic import BaseModel

from huabu.deployments.core.state import KeyValueStore
from huabu.deployments.ingest.schema import Source

PUBLISH_LEASE_S = 30.0  # a replica that dies while publishing leaves a job to others after this


class PendingResult(BaseModel):
    """What a result message needs beyond the job: where the request came from, and its ids."""

    source: Source
    key: str | None = None  # the request message's key: the result's key when no correlation id
    correlation_id: str | None = None
    idempotency_key: str | None = None
    traceparent: str | None = None  # the message's span: the result carries it on

    @property
    def result_key(self) -> str | None:
        return self.correlation_id or self.key


class PendingResults:
    def __init__(self, kv: KeyValueStore, group_id: str, ttl_s: float) -> None:
        self.kv = kv
        self.prefix = f"ingest:kafka:{group_id}"
        self.ttl_s = ttl_s

    def _record(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    async def add(self, job_id: str, pending: PendingResult) -> None:
        """Idempotent: a re-read message whose job exists writes the same entry again."""
        await self.kv.put(self._record(job_id), pending.model_dump_json().encode(), ttl_s=self.ttl_s)
        await self.kv.sadd(f"{self.prefix}:pending", job_id)

    async def job_ids(self) -> set[str]:
        return await self.kv.smembers(f"{self.prefix}:pending")

    async def get(self, job_id: str) -> PendingResult | None:
        raw = await self.kv.get(self._record(job_id))
        return PendingResult.model_validate_json(raw) if raw else None

    async def claim(self, job_id: str, owner: str) -> bool:
        return await self.kv.put(
            f"{self._record(job_id)}:lease", owner.encode(), ttl_s=PUBLISH_LEASE_S, only_if_absent=True
        )

    async def done(self, job_id: str) -> None:
        await self.kv.srem(f"{self.prefix}:pending", job_id)
        await self.kv.delete(self._record(job_id), f"{self._record(job_id)}:lease")
