"""The Kafka clients (confluent-kafka, librdkafka): their settings, and a producer to await.

``confluent_kafka`` is the optional extra ``huabu[kafka]``; it is imported only here and only by the
ingress replicas, so an app without Kafka never needs it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from huabu.deployments.core.settings import KafkaIngestSettings

INSTALL_HINT = "the Kafka ingress needs confluent-kafka: pip install 'huabu[kafka]'"


def _kafka() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:  # pragma: no cover - the extra is part of the test environment
        raise RuntimeError(INSTALL_HINT) from exc
    return confluent_kafka


def common_config(config: KafkaIngestSettings, client_id: str) -> dict[str, Any]:
    return {"bootstrap.servers": config.bootstrap_servers, "client.id": client_id, **config.security}


def consumer_config(config: KafkaIngestSettings, client_id: str) -> dict[str, Any]:
    return {
        **common_config(config, client_id),
        "group.id": config.group_id,
        # Offsets are committed by the ingress, only after each message's job is durable.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Partitions move between members one by one instead of stopping the whole group.
        "partition.assignment.strategy": "cooperative-sticky",
        **config.consumer,
    }


def new_consumer(config: KafkaIngestSettings, client_id: str) -> Any:
    return _kafka().Consumer(consumer_config(config, client_id))


def topic_partition(topic: str, partition: int, offset: int = -1001) -> Any:
    return _kafka().TopicPartition(topic, partition, offset)


def ensure_topics(config: KafkaIngestSettings, client_id: str, timeout_s: float = 15.0) -> None:
    """Create the three topics where missing (``create_topics``: development and ``huabu up``)."""
    kafka = _kafka()
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(common_config(config, client_id))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [config.requests_topic, config.results_topic, config.dead_letter_topic]
    new = [NewTopic(t, config.partitions, 1) for t in dict.fromkeys(wanted) if t not in existing]
    for future in admin.create_topics(new).values() if new else []:
        try:
            future.result(timeout_s)
        except kafka.KafkaException as exc:  # created meanwhile by another replica
            if exc.args[0].code() != kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                raise


class AsyncProducer:
    """An idempotent producer whose sends are awaited until the broker has the message (acks=all).
    librdkafka calls delivery reports from ``poll``, which a thread of its own keeps calling."""

    def __init__(self, config: KafkaIngestSettings, client_id: str) -> None:
        kafka = _kafka()
        self.error_type = kafka.KafkaException
        self.producer = kafka.Producer(
            {**common_config(config, client_id), "enable.idempotence": True, "acks": "all", "linger.ms": 5}
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="huabu-kafka-producer", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def report(error: Any, _message: Any) -> None:
            def settle() -> None:
                if delivered.done():
                    return
                if error is None:
                    delivered.set_result(None)
                else:
                    delivered.set_exception(self.error_type(error))

            loop.call_soon_threadsafe(settle)

        self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=report)
        await delivered

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self.producer.flush(timeout_s)
