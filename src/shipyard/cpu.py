"""How a server's threads share a core: the scheduling policy and the background threads' pace.

A server runs an event loop, one model thread per variant and a few background writers
(records, monitoring, access log), all under one GIL. Two things decide what their hand-offs
cost on a busy core:

- **Wakeup preemption.** Under Linux's default policy a thread that wakes preempts the one
  running, even when what it woke for is the GIL the running thread still holds: it runs a few
  microseconds, blocks on the GIL, and the core switches back. `SCHED_BATCH` turns that off for
  the server's threads (measured on one core: 3.8 context switches per request down to 0.5).
  Its cost: a thread that wakes waits for the running one to block, yield or finish its slice
  (a few milliseconds at most).
- **Bursts.** So that cost stays small, background work never runs long without giving the
  core away: `Pacer` yields every `slice_s` of work, with the GIL released, so a request that
  arrives meanwhile waits half a millisecond at most, not a whole batch of records.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Literal

Policy = Literal["batch", "normal"]
POLICIES: tuple[Policy, ...] = ("batch", "normal")
SLICE_S = 0.0005


def set_policy(policy: Policy) -> bool:
    """Apply `policy` to every thread of this process (numeric libraries start worker threads
    at import) and so to every thread started later, which inherits it. False where the
    platform has no such policy (not Linux): the default stays."""
    if policy == "normal" or not hasattr(os, "SCHED_BATCH"):
        return policy == "normal"
    param = os.sched_param(0)
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, param)  # refused here: refused everywhere
    except OSError:
        return False
    for tid in _threads():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setscheduler(tid, os.SCHED_BATCH, param)
    return True


def _threads() -> list[int]:
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return []


class Pacer:
    """Call once per item of background work: every `slice_s` of it, the core is given away."""

    __slots__ = ("_since", "slice_s")

    def __init__(self, slice_s: float = SLICE_S) -> None:
        self.slice_s = slice_s
        self._since = time.perf_counter()

    def __call__(self) -> None:
        now = time.perf_counter()
        if now - self._since >= self.slice_s:
            give_way()
            self._since = time.perf_counter()

    def restart(self) -> None:
        """The thread slept: its next slice starts now."""
        self._since = time.perf_counter()


def name_thread() -> None:
    """Give the calling thread's OS thread its Python name, less the `shipyard-` prefix and
    cut to Linux's 15 characters, so `top -H`, `ps -L` and /proc tell the model thread from
    the access log's (Python 3.11 leaves every thread of the process named after it)."""
    name = threading.current_thread().name.removeprefix("shipyard-")[:15]
    comm = f"/proc/self/task/{threading.get_native_id()}/comm"
    # Not Linux, or no /proc: the names stay as they were.
    with contextlib.suppress(OSError), open(comm, "w") as file:
        file.write(name)


def give_way() -> None:
    """Let any thread waiting for this core (or the GIL) run now."""
    if hasattr(os, "sched_yield"):
        os.sched_yield()  # releases the GIL around the system call
    else:
        time.sleep(0)
