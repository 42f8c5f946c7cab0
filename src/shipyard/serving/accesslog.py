"""Structured JSON access log, written off the hot path, and the one hand-off of every finished
request to whatever else watches requests (the monitor).

A request only appends a small tuple to a queue; a background thread formats each entry as
one JSON object per line and passes the entries, in bulk, to its observers. One hand-off per
request serves both: on the server's thread each step runs with cold caches, and a second
hand-off (the monitor's own, as it was) cost 7-9 us a request there.

JSON encoding escapes newlines and control characters, so a value a caller sends (a request
id, a path) can never forge a log line, and PII or secrets in those values are redacted
before they are written.
"""

from __future__ import annotations

import functools
import logging
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import orjson

from shipyard.cpu import Pacer, name_thread
from shipyard.security.pii import redact_text

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
# Deployment names and error codes come from the server, never straight from a caller.
REDACTED = frozenset({"path", "request_id"})
# What the server's own request ids look like (`online.new_request_id`): 24 letters a-p hold
# no PII, and checking them would cost ~8 us each on a thread that shares the server's core.
OWN_ID = re.compile(r"[a-p]{24}")
# Paths repeat (one per route and deployment): remember their verdicts.
_redacted = functools.lru_cache(maxsize=4096)(redact_text)
FLUSH_S = 0.05
log = logging.getLogger("shipyard.serving")


# What an observer gets: entries as queued, (time, *FIELDS[1:], context), oldest first.
Observer = Callable[[list[tuple[Any, ...]]], None]


class AccessLog:
    def __init__(self, stream: IO[str] | None = None, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._observers: list[Observer] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._draining = threading.Lock()
        if enabled:
            self._start()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shipyard-access-log", daemon=True)
        self._thread.start()

    def observe(self, observer: Observer) -> None:
        """Hand every entry to `observer` too, in bulk, on the log's thread (or in `drain`),
        whether or not the log itself is written."""
        self._observers.append(observer)
        if self._thread is None:
            self._start()

    def record(self, *entry: Any) -> None:
        """Queue one entry, in the order of FIELDS minus `time` (added here), then the
        request's context for the observers (None when there are none). A thread runs
        while the log is written or observed, until `close`."""
        if self._thread is not None:
            self._queue.put((time.time(), *entry))

    def drain(self, pace: Callable[[], None] | None = None) -> None:
        """Write and hand on everything queued so far, now, on the caller's thread (a caller
        that needs every request finished so far seen by the observers calls this)."""
        with self._draining:
            entries = []
            while True:
                try:
                    entries.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not entries:
                return
            for observer in self._observers:
                try:
                    observer(entries)
                except Exception:  # an observer's bug must not stop the log
                    log.exception("an access log observer failed")
            if not self.enabled:
                return
            lines = []
            for entry in entries:
                lines.append(self._format(entry))
                if pace is not None:
                    pace()
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed stream must not take the server down

    def _run(self) -> None:
        name_thread()
        # Wake on a timer, not per entry: a blocking get() would wake this thread (and hand it
        # the GIL) once per request, which costs the server more than the logging itself.
        pace = Pacer()
        while True:
            stop = self._stop.wait(FLUSH_S)
            pace.restart()
            self.drain(pace)
            if stop:
                return

    @staticmethod
    def _format(entry: tuple[Any, ...]) -> str:
        data = {}
        # zip stops at FIELDS' end: the context, last, is never logged.
        for key, value in zip(FIELDS, entry, strict=False):
            if value is None:
                continue
            if isinstance(value, str):
                if len(value) > MAX_VALUE:
                    value = value[:MAX_VALUE] + "…"
                if key in REDACTED and not (key == "request_id" and OWN_ID.fullmatch(value)):
                    # A path or request id a caller chose can carry an email or a card.
                    value = _redacted(value)
            data[key] = value
        return orjson.dumps(data).decode() + "\n"

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(2.0)
            self._thread = None
        self.drain()  # whatever a thread that timed out left
