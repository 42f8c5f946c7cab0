"""What handing each model call off the event loop costs, on one core, at concurrency 1.

    .venv/bin/python bench/serving/handoff.py [--calls 2000] [--rounds 7]

shipyard runs every model call on its variant's model thread (model code never blocks the
event loop); the floor calls predict inline, on the loop. When requests do not overlap
(concurrency 1) the hand-off buys nothing and costs two thread switches per request. This
measures that cost in one process pinned to core 0 under SCHED_BATCH, as `shipyard serve`
runs, through shipyard's own `Batcher` (max_batch 1), for two jobs:

- **predict**: the benchmark model's `predict_proba` on the request row (bench/serving/model.py),
  with shipyard's scikit-learn settings;
- **python**: a pure-Python loop of about the same length, which touches little memory.

For each job and way (inline on the loop, or through the Batcher) it takes the process's CPU
time per call (every thread), and, through the Batcher, the job's own time on the model
thread. Rounds alternate the two ways; the figures are medians over rounds. Writes
handoff.md beside this file.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model import MODEL_FILE, data, request_row, save

from shipyard.cpu import set_policy
from shipyard.runtimes.sklearn import SETTINGS
from shipyard.serving.batcher import Batcher

HERE = Path(__file__).resolve().parent


def python_job(n: int) -> Callable[[], int]:
    def job() -> int:
        total = 0
        for i in range(n):
            total += i
        return total
    return job


def calibrate(target_s: float) -> int:
    """Loop length whose pure-Python job takes about `target_s`."""
    n = 1000
    job = python_job(n)
    start = time.perf_counter()
    for _ in range(200):
        job()
    per = (time.perf_counter() - start) / 200
    return max(100, int(n * target_s / per))


class Timed:
    """A job that also sums its own wall time (on whichever thread runs it)."""

    def __init__(self, job: Callable[[], object]) -> None:
        self.job, self.seconds, self.calls = job, 0.0, 0

    def __call__(self) -> object:
        start = time.perf_counter()
        result = self.job()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return result


async def inline(job: Callable[[], object], calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        job()
    return (time.process_time() - start) / calls


async def handed_off(batcher: Batcher, calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        await batcher.submit(None)
    return (time.process_time() - start) / calls


async def measure(jobs: dict[str, Callable[[], object]], calls: int,
                  rounds: int) -> dict[str, dict[str, list[float]]]:
    figures: dict[str, dict[str, list[float]]] = {
        name: {"inline": [], "thread": [], "job_in_thread": []} for name in jobs
    }
    for name, job in jobs.items():
        timed = Timed(job)

        def run(items: Sequence[Any], timed: Timed = timed) -> list[object]:
            return [timed() for _ in items]

        batcher = Batcher(run, max_batch=1, name=f"handoff-{name}",
                          on_start=lambda: sklearn.set_config(**SETTINGS))
        try:
            await inline(job, calls // 4)  # warm both paths
            await handed_off(batcher, calls // 4)
            for round_ in range(rounds):
                ways = ("inline", "thread") if round_ % 2 == 0 else ("thread", "inline")
                for way in ways:
                    if way == "inline":
                        figures[name]["inline"].append(await inline(job, calls))
                    else:
                        timed.seconds, timed.calls = 0.0, 0
                        figures[name]["thread"].append(await handed_off(batcher, calls))
                        figures[name]["job_in_thread"].append(timed.seconds / timed.calls)
        finally:
            batcher.close()
    return figures


def report(figures: dict[str, dict[str, list[float]]], args: argparse.Namespace,
           loop_n: int) -> str:
    us = lambda values: statistics.median(values) * 1e6  # noqa: E731
    lines = [
        "# The model thread's hand-off, per call, at concurrency 1",
        "",
        f"Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
        f"`python bench/serving/handoff.py --calls {args.calls} --rounds {args.rounds}`",
        "",
        f"Machine: {os.cpu_count()} cores, Linux {platform.release()}, Python "
        f"{platform.python_version()}. One process pinned to core 0 under SCHED_BATCH; "
        f"{args.calls} calls per point, {args.rounds} rounds alternating the two ways, medians. "
        "CPU is the process's (every thread) per call; the last column is the job's own wall "
        "time on the model thread, to set beside its CPU time inline.",
        "",
        "| job | inline on the loop, CPU us | through the Batcher, CPU us | hand-off us | "
        "the job alone on the model thread us |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in figures.items():
        inline_us, thread_us = us(values["inline"]), us(values["thread"])
        lines.append(
            f"| {name} | {inline_us:.1f} | {thread_us:.1f} | {thread_us - inline_us:+.1f} | "
            f"{us(values['job_in_thread']):.1f} |"
        )
    lines += [
        "",
        f"'python' is a pure-Python loop of {loop_n:,} additions, calibrated to about the "
        "model call's length. The hand-off is the Batcher's round trip (a queue put that wakes "
        "the model thread, a `call_soon_threadsafe` that wakes the loop) plus whatever the two "
        "switches do to the job itself: compare the last column with the first.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "handoff.md")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    set_policy("batch")
    with tempfile.TemporaryDirectory() as folder:
        save(folder)
        model = joblib.load(Path(folder) / MODEL_FILE)
    X, _ = data()
    row = np.asarray([request_row(X)], dtype=np.float64)
    sklearn.set_config(**SETTINGS)
    predict = lambda: model.predict_proba(row)  # noqa: E731
    start = time.perf_counter()
    for _ in range(200):
        predict()
    loop_n = calibrate((time.perf_counter() - start) / 200)
    jobs = {"predict": predict, "python": python_job(loop_n)}
    figures = uvloop.run(measure(jobs, args.calls, args.rounds))
    text = report(figures, args, loop_n)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
