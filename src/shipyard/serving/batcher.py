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
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Job = Callable[[Sequence[Any]], Sequence[Any]]


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    largest: int = 0
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1024))

    def add(self, rows: int) -> None:
        self.batches += 1
        self.rows += rows
        self.largest = max(self.largest, rows)
        self.sizes.append(rows)


class Batcher:
    """Collects items on the event loop; a worker thread runs `job` on lists of them.

    `job(items)` gets the items of one batch in arrival order and returns one result per item
    (or raises, which fails every item of that batch with the same exception).
    """

    def __init__(
        self,
        job: Job,
        *,
        rows_of: Callable[[Any], int] = lambda _: 1,
        max_batch: int = 64,
        max_wait_s: float = 0.0,
        name: str = "model",
    ) -> None:
        self.job = job
        self.rows_of = rows_of
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.stats = BatchStats()
        self._pending: deque[tuple[Any, int, asyncio.Future[Any]]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"shipyard-{name}", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def submit(self, item: Any) -> asyncio.Future[Any]:
        """Queue one item; the returned future resolves on the calling event loop."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        with self._wake:
            if self._closed:
                raise RuntimeError("batcher is closed")
            self._pending.append((item, self.rows_of(item), future))
            self._wake.notify()
        return future

    def _take(self) -> list[tuple[Any, int, asyncio.Future[Any]]] | None:
        with self._wake:
            while not self._pending and not self._closed:
                self._wake.wait()
            if not self._pending:
                return None
            if self.max_wait_s and self._rows_pending() < self.max_batch:
                deadline = time.monotonic() + self.max_wait_s
                while self._rows_pending() < self.max_batch and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
            taken = [self._pending.popleft()]
            rows = taken[0][1]
            while self._pending and rows + self._pending[0][1] <= self.max_batch:
                entry = self._pending.popleft()
                rows += entry[1]
                taken.append(entry)
            return taken

    def _rows_pending(self) -> int:
        return sum(rows for _, rows, _ in self._pending)

    def _work(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            items = [item for item, _, _ in taken]
            self.stats.add(sum(rows for _, rows, _ in taken))
            try:
                results: Sequence[Any] | BaseException = self.job(items)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                results = exc
            for index, (_, _, future) in enumerate(taken):
                loop = future.get_loop()
                outcome = results if isinstance(results, BaseException) else results[index]
                # A closed loop (shutdown) means nobody is waiting any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_resolve, future, outcome)

    def close(self, timeout: float | None = 5.0) -> None:
        """Finish queued work, then stop the worker thread."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


def _resolve(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return  # the caller timed out and cancelled it
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
