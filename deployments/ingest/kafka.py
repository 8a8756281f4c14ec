"""KafkaIngress: a Serve deployment whose replicas are the members of one consumer group.

    requests topic ─► parse (schema.py) ─bad─► dead-letter topic
                        │
                        ▼  Gateway.submit_ingested (door.py): the POST /v1/jobs path, key id configured
                     durable job ─► pending result (results.py) ─► offset committed (offsets.py)
                        ▼  (gateway job runners run it: filters, cache, router, model)
                     finished job ─► results topic (keyed by the correlation id)

Delivery: a message's offset is committed only after its job exists and its result is owed in the
store, so a replica that dies re-reads from the last commit; the idempotency key (default: topic,
partition and offset) makes a re-read message name the job it created before: effectively-once
job creation. Results are at-least-once with the job's id as a stable id. A message that can never
become a job goes to the dead-letter topic with the reason and its offset moves on; a busy system
(rate limit, store or gateway unavailable) pauses the partitions and the message is retried.
Backpressure: while ``max_pending_jobs`` of the group's jobs are unfinished the partitions are
paused (the topic holds the backlog, not the job store), and resumed at ``resume_below``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any

from ray import serve

from huabu.deployments.core import metrics, telemetry
from huabu.deployments.core.settings import Settings
from huabu.deployments.core.state import open_store
from huabu.deployments.gateway.jobs import JobStore
from huabu.deployments.ingest.clients import AsyncProducer, ensure_topics, new_consumer, topic_partition
from huabu.deployments.ingest.door import Delivery, Submission
from huabu.deployments.ingest.offsets import PartitionOffsets
from huabu.deployments.ingest.results import PendingResult, PendingResults
from huabu.deployments.ingest.schema import (
    JOB_ID_HEADER,
    REASON_HEADER,
    TRACEPARENT_HEADER,
    Rejected,
    Source,
    dead_letter,
    parse_request,
    result_message,
)
from huabu.sdk.types import ErrorBody, Job, JobStatus

logger = logging.getLogger("huabu.ingest")
IDLE_POLL_S = 0.05
SUBMIT_TIMEOUT_S = 30.0  # a gateway call longer than this is retried (the job key makes it safe)
RETRY_MAX_S = 5.0
LAG_EVERY_S = 5.0
# A message whose submission answers one of these is the message's fault: dead-lettered, not retried.
REJECTED_STATUSES = frozenset({400, 404, 413, 415, 422})
# A finished job that failed for one of these never could have succeeded: its request is dead-lettered too.
REJECTED_ERRORS = frozenset({"content_policy_violation", "invalid_request_error", "not_found_error"})


def _header(headers: list[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or []:
        if key.lower() == name and value:
            return value.decode(errors="replace")
    return None


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=5)
class KafkaIngress:
    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]
        telemetry.configure(settings, "kafka_ingress")
        self.settings = settings
        self.config = config = settings.ingest.kafka
        kv = open_store(settings.state)
        self.jobs = JobStore(kv, settings.jobs)
        self.pending = PendingResults(kv, config.group_id, settings.jobs.result_ttl_s)
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self.gateway = serve.get_deployment_handle("Gateway", context.app_name)
        client_id = f"huabu-{settings.app_name}-{self.replica}"
        if config.create_topics:
            await asyncio.to_thread(ensure_topics, config, client_id)
        self.producer = AsyncProducer(config, client_id)
        self.consumer = new_consumer(config, client_id)
        self.offsets: dict[int, PartitionOffsets] = {}
        self.working: set[asyncio.Task[None]] = set()
        self.unfinished = 0  # the group's unfinished jobs at the last look, plus those created here since
        self.peak_unfinished = 0
        self.retry_until = 0.0  # monotonic: a busy answer holds the partitions paused until then
        self.paused = False
        self.counts = {"in": 0, "out": 0, "dead_lettered": 0, "retries": 0, "pauses": 0, "resumes": 0}
        self.lag: dict[int, int] = {}
        self.failure: Exception | None = None
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._consume()), loop.create_task(self._publish())]

    def check_health(self) -> None:
        if self.failure is not None:
            raise RuntimeError(f"a kafka message failed unexpectedly: {self.failure!r}")
        for task in self.tasks:
            if task.done():
                raise RuntimeError(
                    f"kafka ingress loop ended: {task.exception() if not task.cancelled() else 'cancelled'}"
                )

    async def __del__(self) -> None:
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            self.consumer.close()  # leaves the group at once: its partitions move without a timeout
        self.producer.close()

    def stats(self) -> dict[str, Any]:
        """This member's view (tests, operators): counts, its partitions, whether paused, lag."""
        return {
            "replica": self.replica,
            "pid": os.getpid(),
            "partitions": sorted(self.offsets),
            "paused": self.paused,
            "unfinished": self.unfinished,
            "peak_unfinished": self.peak_unfinished,
            "lag": dict(self.lag),
            **self.counts,
        }

    # --- consuming ---------------------------------------------------------------------------------

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self.offsets[tp.partition] = PartitionOffsets()
        if self.paused and partitions:
            consumer.pause(partitions)
        logger.info("kafka partitions assigned: %s", [tp.partition for tp in partitions])

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        # Commit what is done before the partitions move; messages still in flight finish here
        # (their jobs are durable) and the new owner re-reads them: the idempotency key dedupes.
        self._commit(only={tp.partition for tp in partitions}, asynchronous=False)
        for tp in partitions:
            self.offsets.pop(tp.partition, None)
            self.lag.pop(tp.partition, None)
        logger.info("kafka partitions revoked: %s", [tp.partition for tp in partitions])

    def _commit(self, only: set[int] | None = None, asynchronous: bool = True) -> None:
        commits = []
        for partition, offsets in self.offsets.items():
            at = offsets.to_commit() if only is None or partition in only else None
            if at is not None:
                commits.append(topic_partition(self.config.requests_topic, partition, at))
                offsets.committed = at
        if commits:
            try:
                self.consumer.commit(offsets=commits, asynchronous=asynchronous)
            except Exception:  # a failed commit only means a re-read, which the idempotency key absorbs
                logger.warning("kafka offset commit failed", exc_info=True)

    def _outstanding(self) -> int:
        """The group's unfinished jobs as last seen, plus this member's messages on their way to one."""
        return self.unfinished + len(self.working)

    def _room(self) -> int:
        """How many more messages this member may take on now."""
        free = self.config.max_pending_jobs - self._outstanding()
        return max(0, min(self.config.submit_concurrency, free))

    def _should_pause(self) -> bool:
        if time.monotonic() < self.retry_until:
            return True
        if self.paused:  # hysteresis: resume only once the jobs have drained to resume_at
            return self._outstanding() > self.config.resume_at
        return self._room() == 0

    def _flow(self) -> None:
        pause = self._should_pause()
        if pause == self.paused:
            return
        assignment = self.consumer.assignment()
        if pause:
            self.consumer.pause(assignment)
            self.counts["pauses"] += 1
        else:
            self.consumer.resume(assignment)
            self.counts["resumes"] += 1
        self.paused = pause
        metrics.kafka_paused(pause)
        logger.info("kafka partitions %s (%d unfinished jobs)", "paused" if pause else "resumed", self.unfinished)

    async def _consume(self) -> None:
        config = self.config
        self.consumer.subscribe(
            [config.requests_topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
        )
        semaphore = asyncio.Semaphore(config.submit_concurrency)
        lag_at = 0.0
        while True:
            self._flow()
            # Non-blocking: rebalance callbacks run here, in the event loop's thread.
            # At most the room left (while paused, this serves callbacks and returns nothing).
            messages = self.consumer.consume(num_messages=max(1, self._room()), timeout=0)
            for message in messages:
                if message.error():
                    logger.warning("kafka consumer: %s", message.error())
                    continue
                offsets = self.offsets.get(message.partition())
                if offsets is None:  # revoked in this very poll
                    continue
                offsets.started(message.offset())
                task = asyncio.get_running_loop().create_task(self._handle(message, offsets, semaphore))
                self.working.add(task)
                task.add_done_callback(self.working.discard)
            self._commit()
            if time.monotonic() - lag_at > LAG_EVERY_S:
                lag_at = time.monotonic()
                await self._measure_lag()
            if not messages:
                await asyncio.sleep(IDLE_POLL_S)

    async def _measure_lag(self) -> None:
        """Consumer lag per partition: the log end minus the committed offset."""
        for partition, offsets in list(self.offsets.items()):
            tp = topic_partition(self.config.requests_topic, partition)
            try:
                _, high = await asyncio.to_thread(self.consumer.get_watermark_offsets, tp, 2.0)
            except Exception:
                continue
            lag = max(0, high - (offsets.committed or 0))
            self.lag[partition] = lag
            metrics.kafka_lag(self.config.requests_topic, partition, lag)

    async def _handle(self, message: Any, offsets: PartitionOffsets, semaphore: asyncio.Semaphore) -> None:
        source = Source(topic=message.topic(), partition=message.partition(), offset=message.offset())
        headers = message.headers()
        delivery = Delivery(
            request_id=f"kafka-{source.partition}-{source.offset}",
            traceparent=_header(headers, TRACEPARENT_HEADER),
        )
        try:
            async with semaphore:
                # One span per message, a child of the producer's traceparent when it sent one.
                with telemetry.hop("kafka.message", delivery, topic=source.topic, partition=source.partition):
                    try:
                        await self._to_job(message, source, delivery)
                    except Rejected as exc:
                        await self._dead_letter(source, message.key(), message.value(), headers, exc.reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never commit past a message whose fate is unknown: restart, re-read it
            logger.exception("kafka message %s failed; the replica restarts from the last commit", source)
            self.failure = exc
            raise
        offsets.finished(source.offset)

    async def _to_job(self, message: Any, source: Source, delivery: Delivery) -> None:
        request = parse_request(message.value(), self.config.max_message_bytes)
        idempotency_key = request.idempotency_key or source.idempotency_key
        key = message.key()
        delay = 0.5
        while True:
            try:
                submission = await asyncio.wait_for(
                    self._submit(request.job, idempotency_key, delivery), SUBMIT_TIMEOUT_S
                )
            except (asyncio.TimeoutError, Exception) as exc:  # the gateway is restarting or slow
                submission = Submission(
                    error=ErrorBody(message=f"gateway unavailable: {exc!r}", type="service_unavailable"), status=503
                )
            if submission.job is not None:
                break
            assert submission.error is not None
            if submission.status in REJECTED_STATUSES:
                raise Rejected(submission.error)
            # Busy, limited or misconfigured (401/403: the key id): hold the partitions and retry.
            wait = min(RETRY_MAX_S, submission.retry_after_s or delay)
            delay = min(RETRY_MAX_S, delay * 2)
            self.counts["retries"] += 1
            self.retry_until = max(self.retry_until, time.monotonic() + wait)
            logger.warning(
                "kafka message %s: %s (%d); retrying in %.1f s",
                source,
                submission.error.message,
                submission.status,
                wait,
            )
            await asyncio.sleep(wait)
        job = submission.job
        pending = PendingResult(
            source=source,
            key=key.decode(errors="replace") if key is not None else None,
            correlation_id=request.correlation_id,
            idempotency_key=request.idempotency_key,
            traceparent=delivery.traceparent,
        )
        await self.pending.add(job.id, pending)  # before the commit: a result is owed from here on
        self.unfinished += 1
        self.counts["in"] += 1
        metrics.kafka_message("in", source.topic)

    async def _submit(self, job: dict[str, Any], idempotency_key: str, delivery: Delivery) -> Submission:
        submission: Submission = await self.gateway.submit_ingested.remote(
            job, idempotency_key, self.config.key_id, delivery
        )
        return submission

    async def _dead_letter(
        self,
        source: Source,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
        reason: ErrorBody,
    ) -> None:
        letter = json.dumps(dead_letter(reason, source, key, value)).encode()
        extra = [(REASON_HEADER, (reason.code or reason.type).encode())]
        await self._send(self.config.dead_letter_topic, key, letter, [*(headers or []), *extra])
        self.counts["dead_lettered"] += 1
        metrics.kafka_message("dead_lettered", source.topic)
        logger.info("kafka message %s dead-lettered: %s", source, reason.message)

    async def _send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Produce until the broker has it: the caller's offset or job waits for this."""
        delay = 0.5
        while True:
            try:
                await self.producer.send(topic, key, value, headers)
                return
            except self.producer.error_type:
                logger.warning("kafka produce to %s failed; retrying", topic, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)

    # --- results -----------------------------------------------------------------------------------

    async def _publish(self) -> None:
        while True:
            try:
                await self._publish_finished()
            except Exception:  # the store is briefly unavailable: look again next time
                logger.warning("kafka result publishing failed; retrying", exc_info=True)
            await asyncio.sleep(self.config.result_poll_s)

    async def _publish_finished(self) -> None:
        created_before = self.counts["in"]
        job_ids = sorted(await self.pending.job_ids())
        jobs = await asyncio.gather(*(self.jobs.get(job_id) for job_id in job_ids))
        unfinished = 0
        for job_id, job in zip(job_ids, jobs, strict=True):
            if job is not None and not job.status.is_terminal:
                unfinished += 1
            elif await self.pending.claim(job_id, self.replica):
                await self._publish_result(job_id, job)
        # Jobs this member created while the round ran are not in its count yet.
        self.unfinished = unfinished + self.counts["in"] - created_before
        self.peak_unfinished = max(self.peak_unfinished, unfinished)

    async def _publish_result(self, job_id: str, job: Job | None) -> None:
        pending = await self.pending.get(job_id)
        if job is None or pending is None:  # expired (result_ttl_s): nothing left to say
            await self.pending.done(job_id)
            return
        request = {"correlation_id": pending.correlation_id, "idempotency_key": pending.idempotency_key}
        message = result_message(job, request, pending.source)
        key = pending.result_key.encode() if pending.result_key else job.id.encode()
        headers = [(JOB_ID_HEADER, job.id.encode())]
        if pending.traceparent:
            headers.append((TRACEPARENT_HEADER, pending.traceparent.encode()))
        await self._send(self.config.results_topic, key, json.dumps(message).encode(), headers)
        self.counts["out"] += 1
        metrics.kafka_message("out", pending.source.topic)
        if job.status == JobStatus.failed and job.error is not None and job.error.type in REJECTED_ERRORS:
            original = await self.jobs.request_json(job_id)
            await self._dead_letter(
                pending.source,
                pending.key.encode() if pending.key else None,
                original.encode() if original else None,
                headers,
                job.error,
            )
        await self.pending.done(job_id)
