from __future__ import annotations

import asyncio
import threading
import time

import pytest

from shipyard.serving.batcher import Batcher


def echo_job(calls: list[list[int]]):  # type: ignore[no-untyped-def]
    def job(items):  # type: ignore[no-untyped-def]
        calls.append(list(items))
        time.sleep(0.01)
        return [item * 10 for item in items]

    return job


def test_concurrent_requests_are_batched_and_answered_in_order():
    calls: list[list[int]] = []
    batcher = Batcher(echo_job(calls), max_batch=64)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(50))))

    try:
        assert asyncio.run(main()) == [i * 10 for i in range(50)]
    finally:
        batcher.close()
    assert len(calls) < 50  # some requests shared a model call
    assert sorted(x for call in calls for x in call) == list(range(50))
    assert batcher.stats.largest > 1


def test_lone_caller_is_not_delayed():
    batcher = Batcher(lambda items: list(items), max_batch=64)

    async def main() -> float:
        started = time.perf_counter()
        for i in range(20):
            assert await batcher.submit(i) == i
        return (time.perf_counter() - started) / 20

    try:
        assert asyncio.run(main()) < 0.005
    finally:
        batcher.close()
    assert batcher.stats.largest == 1


def test_max_batch_counts_rows_not_requests():
    calls: list[list[list[int]]] = []

    def job(items):  # type: ignore[no-untyped-def]
        calls.append(list(items))
        time.sleep(0.005)
        return [len(item) for item in items]

    batcher = Batcher(job, rows_of=len, max_batch=10)

    async def main() -> None:
        await asyncio.gather(*(batcher.submit([0] * 4) for _ in range(12)))

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert all(sum(len(item) for item in call) <= 10 for call in calls)


def test_job_failure_reaches_every_caller_of_the_batch():
    def job(items):  # type: ignore[no-untyped-def]
        raise RuntimeError("model broke")

    batcher = Batcher(job)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="model broke"):
            await batcher.submit(1)

    try:
        asyncio.run(main())
    finally:
        batcher.close()


def test_per_item_exceptions_fail_only_their_caller():
    def job(items):  # type: ignore[no-untyped-def]
        return [ValueError(str(i)) if i < 0 else i for i in items]

    batcher = Batcher(job)

    async def main() -> list[object]:
        return list(
            await asyncio.gather(batcher.submit(1), batcher.submit(-1), return_exceptions=True)
        )

    try:
        first, second = asyncio.run(main())
    finally:
        batcher.close()
    assert first == 1 and isinstance(second, ValueError)


def test_max_wait_collects_a_fuller_batch():
    calls: list[list[int]] = []
    batcher = Batcher(echo_job(calls), max_batch=8, max_wait_s=0.2)

    async def main() -> None:
        first = batcher.submit(1)
        await asyncio.sleep(0.02)
        await asyncio.gather(first, *(batcher.submit(i) for i in range(2, 9)))

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert calls[0] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_close_drains_queued_work_and_refuses_new():
    release = threading.Event()

    def job(items):  # type: ignore[no-untyped-def]
        release.wait(5)
        return list(items)

    batcher = Batcher(job, max_batch=1)

    async def main() -> list[int]:
        futures = [batcher.submit(i) for i in range(3)]
        threading.Timer(0.1, release.set).start()
        await asyncio.sleep(0)
        closer = asyncio.get_running_loop().run_in_executor(None, batcher.close)
        results = list(await asyncio.gather(*futures))
        await closer
        with pytest.raises(RuntimeError, match="closed"):
            batcher.submit(9)
        return results

    assert asyncio.run(main()) == [0, 1, 2]


def test_start_hook_runs_once_on_the_worker_thread_before_any_job():
    seen: list[str] = []

    def job(items):  # type: ignore[no-untyped-def]
        seen.append(f"job:{threading.current_thread().name}")
        return items

    batcher = Batcher(job, name="hooked",
                      on_start=lambda: seen.append(f"start:{threading.current_thread().name}"))

    async def main() -> list[int]:
        return [await batcher.submit(1), await batcher.submit(2)]

    try:
        assert asyncio.run(main()) == [1, 2]
    finally:
        batcher.close()
    assert seen == ["start:shipyard-hooked", "job:shipyard-hooked", "job:shipyard-hooked"]


def test_a_failing_start_hook_is_logged_and_the_model_still_answers(caplog):
    def broken() -> None:
        raise RuntimeError("no settings today")

    batcher = Batcher(lambda items: [i + 1 for i in items], on_start=broken)
    try:
        assert asyncio.run(_one(batcher, 41)) == 42
    finally:
        batcher.close()
    assert "start hook failed" in caplog.text


async def _one(batcher: Batcher, item: int) -> int:
    return await batcher.submit(item)  # type: ignore[no-any-return]
