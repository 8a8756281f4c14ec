"""What a partition may commit: offsets are committed only once every message before them is done.

Messages of a partition are worked on concurrently, so they finish out of order; the committable
offset is the lowest one still being worked on (or one past the last started when none is). A
crash re-reads from there, and the idempotency key makes the re-read create no second job."""

from __future__ import annotations


class PartitionOffsets:
    def __init__(self) -> None:
        self.working: set[int] = set()
        self.next_offset: int | None = None  # one past the last message started
        self.committed: int | None = None  # the last offset handed to the consumer to commit

    def started(self, offset: int) -> None:
        self.working.add(offset)
        self.next_offset = max(self.next_offset or 0, offset + 1)

    def finished(self, offset: int) -> None:
        self.working.discard(offset)

    def to_commit(self) -> int | None:
        """The offset to commit now (the next message to read after a restart), None if unchanged."""
        at = min(self.working) if self.working else self.next_offset
        if at is None or at == self.committed:
            return None
        return at
