"""The key-value state store that experiment metrics and rollout state live in.

The ab_testing package only needs JSON values by key, a prefix listing and one atomic primitive.
The embedded named-Ray-actor store and the Redis store implement this Protocol elsewhere (an actor
runs one method at a time, so each method is atomic; Redis does compare-and-set with WATCH/MULTI or
a Lua script); ``InMemoryStateStore`` is the reference implementation for tests and single-process
use.

Key layout (":"-separated; identifiers are validated not to contain ":")::

    huabu:ab:metrics:<experiment>:<phase>:<variant>:<replica>   one replica's partial metrics
    huabu:ab:rollout:<rollout id>                               a Rollout
"""

from __future__ import annotations

import copy
import json
import threading
from typing import Any, Protocol, runtime_checkable

KEY_PREFIX = "huabu:ab"

JSONValue = Any  # JSON-serialisable: dict / list / str / int / float (finite) / bool / None


@runtime_checkable
class StateStore(Protocol):
    def get(self, key: str) -> JSONValue | None:
        """The value at ``key``, or None."""
        ...

    def set(self, key: str, value: JSONValue) -> None: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str) -> list[str]:
        """All keys that start with ``prefix`` (any order). Called on every controller tick: a
        shared store should answer it from an index, not by scanning its keyspace."""
        ...

    def compare_and_set(self, key: str, expected: JSONValue | None, value: JSONValue) -> bool:
        """Atomically: if the value at ``key`` equals ``expected`` (None: absent), set it and return True.

        Equality is of the decoded JSON values. This is the one atomic hook the package needs:
        read-modify-write loops on it give every writer a consistent update without locks (two
        gateway replicas both evaluating a rollout cannot both advance it).
        """
        ...


class InMemoryStateStore:
    """Thread-safe dict-backed store. Values are copied in and out and must be strict JSON."""

    def __init__(self) -> None:
        self._data: dict[str, JSONValue] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _check(value: JSONValue) -> JSONValue:
        # Round-trip through strict JSON so nothing passes here that Redis could not hold.
        return json.loads(json.dumps(value, allow_nan=False))

    def get(self, key: str) -> JSONValue | None:
        with self._lock:
            return copy.deepcopy(self._data.get(key))

    def set(self, key: str, value: JSONValue) -> None:
        value = self._check(value)
        with self._lock:
            self._data[key] = value

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def keys(self, prefix: str) -> list[str]:
        with self._lock:
            return [k for k in self._data if k.startswith(prefix)]

    def compare_and_set(self, key: str, expected: JSONValue | None, value: JSONValue) -> bool:
        value = self._check(value)
        with self._lock:
            if self._data.get(key) != expected:
                return False
            self._data[key] = value
            return True


class ConflictError(RuntimeError):
    """A read-modify-write lost the compare-and-set race too many times."""
