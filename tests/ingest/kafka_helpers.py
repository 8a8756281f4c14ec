"""What the Kafka tests share: the broker's address with topic and produce helpers, and a reader of
result topics (a background thread, from the beginning, no consumer group)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka


@dataclass
class Broker:
    bootstrap: str

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Until the broker answers a metadata request (raises KafkaException after ``timeout_s``)."""
        from confluent_kafka.admin import AdminClient

        AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=timeout_s)

    def create_topics(self, partitions: dict[str, int]) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(name, count, 1) for name, count in partitions.items()])
        for future in futures.values():
            future.result(15)

    def produce(self, messages: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]], topic: str) -> None:
        producer = confluent_kafka.Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True})
        for key, value, headers in messages:
            producer.produce(topic, key=key, value=value, headers=headers)
            producer.poll(0)
        assert producer.flush(30) == 0, "messages left unsent"


@dataclass
class TopicReader:
    """Everything on some topics, read from the beginning by a background thread (no group)."""

    bootstrap: str
    topics: dict[str, int]
    messages: dict[str, list[Any]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> TopicReader:
        self.messages = {topic: [] for topic in self.topics}
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        consumer = confluent_kafka.Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
        )
        begin = confluent_kafka.OFFSET_BEGINNING
        consumer.assign(
            [confluent_kafka.TopicPartition(t, p, begin) for t, count in self.topics.items() for p in range(count)]
        )
        while not self._stop.is_set():
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            with self._lock:
                self.messages[message.topic()].append(message)
        consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def json_of(self, topic: str, where: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self._lock:
            values = [json.loads(m.value()) for m in self.messages[topic]]
        return [v for v in values if where(v)]

    def wait(
        self, topic: str, where: Callable[[dict[str, Any]], bool], count: int, timeout_s: float
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.json_of(topic, where)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.2)
