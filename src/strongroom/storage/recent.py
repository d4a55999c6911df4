"""A bounded, thread-safe set of recently seen names (the containers a backend knows exist,
so that it asks the store once per container, not once per put)."""

from __future__ import annotations

import threading
from collections import OrderedDict

MAX_KNOWN_CONTAINERS = 256


class RecentNames:
    """At most ``limit`` names; the least recently used goes first. Forgetting a name only
    costs a HEAD or PUT of its container on the next write to it."""

    def __init__(self, limit: int = MAX_KNOWN_CONTAINERS) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._names: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        with self._lock:
            if name not in self._names:
                return False
            assert isinstance(name, str)
            self._names.move_to_end(name)
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._names)

    def add(self, name: str) -> None:
        with self._lock:
            self._names[name] = None
            self._names.move_to_end(name)
            while len(self._names) > self._limit:
                self._names.popitem(last=False)

    def discard(self, name: str) -> None:
        with self._lock:
            self._names.pop(name, None)
