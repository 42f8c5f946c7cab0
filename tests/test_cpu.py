"""The server threads' scheduling policy and the background threads' pace."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shipyard import cpu

linux_only = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="a Linux policy")


SCRIPT = """
import os, sys, threading, time
from shipyard import cpu

def policies():
    return sorted({os.sched_getscheduler(int(t)) for t in os.listdir("/proc/self/task")})

stop = threading.Event()
before = threading.Thread(target=stop.wait)  # a thread that exists before the call
before.start()
applied = cpu.set_policy(sys.argv[1])
after = []
later = threading.Thread(target=lambda: after.append(os.sched_getscheduler(0)))
later.start()
later.join()
print(applied, policies(), after)
stop.set()
"""


def _run(policy: str) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT, policy], capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout.strip()


@linux_only
def test_batch_reaches_every_thread_of_the_process_and_every_later_one():
    assert _run("batch") == f"True [{os.SCHED_BATCH}] [{os.SCHED_BATCH}]"


@linux_only
def test_normal_leaves_the_operating_systems_default():
    assert _run("normal") == f"True [{os.SCHED_OTHER}] [{os.SCHED_OTHER}]"


def test_the_pacer_gives_the_core_away_once_per_slice(monkeypatch: pytest.MonkeyPatch):
    given: list[int] = []
    monkeypatch.setattr(cpu, "give_way", lambda: given.append(1))

    never = cpu.Pacer(slice_s=3600.0)
    for _ in range(1000):
        never()
    assert given == []

    always = cpu.Pacer(slice_s=0.0)
    for _ in range(5):
        always()
    assert len(given) == 5



@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="thread names live in /proc")
def test_a_server_thread_carries_its_name_at_the_os_level():
    import asyncio
    import threading

    from shipyard.serving.batcher import Batcher

    batcher = Batcher(lambda items: items, name="cancer-champion-and-more")

    async def one() -> object:
        return await batcher.submit("x")

    try:
        assert asyncio.run(one()) == "x"  # the thread has run: it names itself first
        tid = batcher._thread.native_id
        with open(f"/proc/self/task/{tid}/comm") as comm:
            # Less the "shipyard-" prefix, cut to Linux's 15 characters.
            assert comm.read().strip() == "cancer-champion"
    finally:
        batcher.close()
    with open(f"/proc/self/task/{threading.get_native_id()}/comm") as comm:
        assert comm.read().strip() != "cancer-champion"  # the caller's own name is untouched
