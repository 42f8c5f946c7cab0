"""Structured JSON access log, written off the hot path.

A request only appends a small tuple to a queue; a background thread formats each entry as
one JSON object per line. JSON encoding escapes newlines and control characters, so a value
a caller sends (a request id, a path) can never forge a log line.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import IO, Any

import orjson

FIELDS = (
    "time",
    "request_id",
    "method",
    "path",
    "status",
    "latency_ms",
    "deployment",
    "variant",
    "model_version",
    "rows",
    "client",
    "error",
)
MAX_VALUE = 200


class AccessLog:
    def __init__(self, stream: IO[str] | None = None, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if enabled:
            self._thread = threading.Thread(
                target=self._write, name="shipyard-access-log", daemon=True
            )
            self._thread.start()

    def record(self, *entry: Any) -> None:
        """Queue one entry, in the order of FIELDS minus `time` (added here)."""
        if self.enabled:
            self._queue.put((time.time(), *entry))

    def _write(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is None:
                return
            data = {}
            for key, value in zip(FIELDS, entry, strict=False):
                if value is None:
                    continue
                if isinstance(value, str) and len(value) > MAX_VALUE:
                    value = value[:MAX_VALUE] + "…"
                data[key] = value
            try:
                self.stream.write(orjson.dumps(data).decode() + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed stream must not take the server down

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(2.0)
            self._thread = None
