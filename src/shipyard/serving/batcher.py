"""Adaptive micro-batching: concurrent requests for one variant are predicted together.

One worker thread per variant runs the model, so model code never blocks the event loop and
a model is never called by two threads at once. The batcher never waits on purpose by
default: a lone caller's request starts at once; while a batch runs, new requests queue up,
and the next batch takes all of them (up to `max_batch` rows). Under load batches grow by
themselves; at low load there is no added latency. `max_wait_s` > 0 additionally holds a
batch open that long for more rows, for models where a bigger batch is much cheaper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipyard.cpu import name_thread

log = logging.getLogger("shipyard.serving")
Job = Callable[[Sequence[Any]], Sequence[Any]]
Entry = tuple[Any, int, "asyncio.Future[Any]"]


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    largest: int = 0
    cpu_s: float = 0.0  # CPU time of the worker thread spent in the job (the cost model's base)
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1024))

    def add(self, rows: int) -> None:
        self.batches += 1
        self.rows += rows
        self.largest = max(self.largest, rows)
        self.sizes.append(rows)


class Batcher:
    """Collects items on the event loop; a worker thread runs `job` on lists of them.

    `job(items)` gets the items of one batch in arrival order and returns one result per item
    (an exception instance fails only that item), or raises, which fails the whole batch.
    The hand-off is a `queue.SimpleQueue` (C, lock-free for the producer): at a few tens of
    microseconds per round trip it is the cheapest way off the event loop and back.
    """

    def __init__(self, job: Job, *, rows_of: Callable[[Any], int] = lambda _: 1,
                 max_batch: int = 64, max_wait_s: float = 0.0, name: str = "model",
                 on_start: Callable[[], None] | None = None) -> None:
        self.job = job
        self.on_start = on_start  # run first on the worker thread (per-thread settings)
        self.rows_of = rows_of
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue[Entry | None] = queue.SimpleQueue()
        self._carry: Entry | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"shipyard-{name}", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def submit(self, item: Any) -> asyncio.Future[Any]:
        """Queue one item; the returned future resolves on the calling event loop."""
        if self._closed:
            raise RuntimeError("batcher is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put((item, self.rows_of(item), future))
        return future

    def _next(self, timeout: float | None) -> Entry | None:
        """The next entry, or None when the wait times out or the batcher closes."""
        try:
            entry = self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else (
                self._queue.get_nowait())
        except queue.Empty:
            return None
        if entry is None:
            self._closed_seen = True
        return entry

    def _take(self) -> list[Entry] | None:
        first = self._carry or self._next(None)
        self._carry = None
        if first is None:
            return None
        taken, rows = [first], first[1]
        deadline = time.monotonic() + self.max_wait_s if self.max_wait_s else None
        while rows < self.max_batch:
            left = None if deadline is None else deadline - time.monotonic()
            entry = self._next(left if left is not None else 0)
            if entry is None:
                if self._closed_seen:
                    self._queue.put(None)  # let the outer loop see the close after this batch
                break
            if rows + entry[1] > self.max_batch:
                self._carry = entry
                break
            taken.append(entry)
            rows += entry[1]
        return taken

    def _work(self) -> None:
        name_thread()
        self._closed_seen = False
        if self.on_start is not None:
            try:
                self.on_start()
            except Exception:  # the model still runs, only without its per-thread settings
                log.exception("the model thread's start hook failed")
        while True:
            taken = self._take()
            if taken is None:
                return
            items = [item for item, _, _ in taken]
            cpu = time.thread_time()
            try:
                results: Sequence[Any] | BaseException = self.job(items)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                results = exc
            self.stats.cpu_s += time.thread_time() - cpu
            self.stats.add(sum(rows for _, rows, _ in taken))
            for index, (_, _, future) in enumerate(taken):
                outcome = results if isinstance(results, BaseException) else results[index]
                # A closed loop (shutdown) means nobody is waiting any more.
                with contextlib.suppress(RuntimeError):
                    future.get_loop().call_soon_threadsafe(_resolve, future, outcome)

    def close(self, timeout: float | None = 5.0) -> None:
        """Finish queued work, then stop the worker thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


def _resolve(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return  # the caller timed out and cancelled it
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
