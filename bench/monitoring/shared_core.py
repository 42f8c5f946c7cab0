"""What monitoring costs per request, with the host's noise taken out: the configurations of
run.py served at the same time, on the same core.

    .venv/bin/python bench/monitoring/shared_core.py [--configs off,monitoring] [--reps 8]
        [--duration 8] [-c 64] [--json PATH]

run.py measures throughput, as the targets are stated, and pairs points seconds apart; on a
host whose speed swings by tens of percent from second to second that leaves ratios spread
from 0.7 to 1.1. Here every configuration is prepared and started as run.py does, all of them
pinned to the server core together, and each repetition loads them all at once, each under
its own wrk (-t1 -cC) on the load core. A swing in the host's speed then hits every server
alike, in the same seconds. Each server's CPU time (utime + stime of its process tree) over
the requests it answered is its cost per request; at saturation a server's throughput goes
as 1 / that cost. The servers share the core, so each answers about 1 / N of what it would
alone, and a cost per second (the flusher's drift judgement, its sketch of up to
SKETCH_PER_FLUSH requests) weighs N times more per request than in run.py.

Per repetition and configuration it prints the CPU per request, the first configuration's
over it (the ratio run.py's CPU column shows), and the split between the event loop (the
main thread), with the loop's context switches per request (GIL hand-offs), and the other
threads (model, access log, monitor flusher, record writer), the largest first. Thread
names are not visible from /proc on Python 3.11, hence by size.
A diagnostic, like profile.py: it judges no target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from run_module import load_run

TICK = os.sysconf("SC_CLK_TCK")
bench = load_run()


def thread_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (utime + stime) of each thread of process `pid`."""
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that ended meanwhile
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def switches(pid: int, tid: int) -> int:
    """Context switches of one thread so far, voluntary and not: each GIL hand-off between
    threads on one core costs at least one, and its system calls are charged to the thread."""
    try:
        status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    except OSError:
        return 0
    return sum(int(line.split()[1]) for line in status.splitlines()
               if "ctxt_switches:" in line)


def repetition(ups: list[Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """All servers loaded at once; per server: CPU per request, split by thread."""
    before = {up.config.name: (up.running.tree.cpu_seconds(),
                               thread_seconds(up.running.proc.pid),
                               switches(up.running.proc.pid, up.running.proc.pid))
              for up in ups}
    results: dict[str, Any] = {}

    def load(up: Any) -> None:
        results[up.config.name] = bench.run_wrk(up.running.port, up.script, args.c, args.duration)

    workers = [threading.Thread(target=load, args=(up,)) for up in ups]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out: dict[str, dict[str, Any]] = {}
    for up in ups:
        name, pid = up.config.name, up.running.proc.pid
        result = results[name]
        if not result.ok_requests:
            raise RuntimeError(f"{name} answered no request")
        tree_before, threads_before, switches_before = before[name]
        used = up.running.tree.cpu_seconds() - tree_before
        per = {tid: (s - threads_before.get(tid, 0.0)) / result.ok_requests * 1e6
               for tid, s in thread_seconds(pid).items()}
        loop = per.pop(pid, 0.0)
        out[name] = {
            "rps": result.rps, "non_2xx": result.non_2xx, "errors": result.errors,
            "cpu_us_per_req": used / result.ok_requests * 1e6,
            "loop_us_per_req": loop,
            "loop_switches_per_req": (switches(pid, pid) - switches_before) / result.ok_requests,
            "other_threads_us_per_req": sorted((v for v in per.values() if v > 0),
                                               reverse=True),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="off,monitoring",
                        help="configurations of run.py, the first the baseline")
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("-c", type=int, default=64, help="wrk connections per server")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--drift-slide-s", type=float, default=5.0)
    parser.add_argument("--records-store", choices=("database", "parquet"), default="database")
    parser.add_argument("--json", type=Path, help="write every repetition here")
    args = parser.parse_args()
    names = args.configs.split(",")
    configs = [c for name in names for c in bench.CONFIGS if c.name == name]
    if len(configs) != len(names) or len(configs) < 2:
        parser.error(f"--configs: two or more of {', '.join(c.name for c in bench.CONFIGS)}")
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {bench.LOAD_CORE})   # wrk inherits it
    workdir = Path(tempfile.mkdtemp(prefix="shipyard-monitoring-shared-"))
    (workdir / "logs").mkdir()
    reference = bench.save(workdir)
    ctx = bench.Context(workdir=workdir, model=workdir / bench.MODEL_FILE, row=reference["row"],
                        peers_dir=workdir)
    args.quiet_wait = 0.0
    for config in configs:
        bench.prepare(ctx, config, args)
    ups = [bench.start(config, ctx, reference, config.name, args) for config in configs]
    reps: list[dict[str, dict[str, Any]]] = []
    try:
        for up in ups:   # warm up: the first seconds of a server are not its steady state
            bench.run_wrk(up.running.port, up.script, args.c, 2)
        for i in range(args.reps):
            rep = repetition(ups, args)
            reps.append(rep)
            base = rep[names[0]]["cpu_us_per_req"]
            print(f"rep {i + 1}/{args.reps}: " + "; ".join(
                f"{n} {r['cpu_us_per_req']:.1f} us/req ({base / r['cpu_us_per_req']:.3f}), "
                f"loop {r['loop_us_per_req']:.1f}, {r['rps']:.0f} req/s"
                for n, r in rep.items()), flush=True)
    finally:
        for up in ups:
            up.running.stop()
    print(f"\nmedians over {len(reps)} repetitions, {len(ups)} servers sharing core "
          f"{bench.SERVER_CORE}, c={args.c} each:")
    print(f"{'configuration':<20} {'us/req':>8} {names[0] + ' / this':>16} {'loop us/req':>12} "
          f"{'loop switches/req':>18} {'other threads us/req':>24}")
    summary: dict[str, Any] = {}
    for name in names:
        mine = [r[name] for r in reps]
        ratio = statistics.median(r[names[0]]["cpu_us_per_req"] / r[name]["cpu_us_per_req"]
                                  for r in reps)
        others = [statistics.median(t[i] if i < len(t) else 0.0
                                    for t in (m["other_threads_us_per_req"] for m in mine))
                  for i in range(4)]
        summary[name] = {
            "cpu_us_per_req": statistics.median(m["cpu_us_per_req"] for m in mine),
            "ratio": ratio,
            "ratios": [r[names[0]]["cpu_us_per_req"] / r[name]["cpu_us_per_req"] for r in reps],
            "loop_us_per_req": statistics.median(m["loop_us_per_req"] for m in mine),
            "loop_switches_per_req": statistics.median(m["loop_switches_per_req"] for m in mine),
            "other_threads_us_per_req": others,
            "rps": statistics.median(m["rps"] for m in mine),
        }
        s = summary[name]
        print(f"{name:<20} {s['cpu_us_per_req']:8.1f} {ratio:16.3f} {s['loop_us_per_req']:12.1f} "
              f"{s['loop_switches_per_req']:18.3f} {', '.join(f'{v:.1f}' for v in others):>24}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "summary": summary, "reps": reps}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
