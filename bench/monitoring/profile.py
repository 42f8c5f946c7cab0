"""Where monitoring's cost goes: py-spy samples of each configuration of run.py under load.

    .venv/bin/python bench/monitoring/profile.py --py-spy PATH [--duration 15] [-c 64]
        [--configs off,monitoring,monitoring+records] [--top 25]

py-spy is not a shipyard dependency: install it in a virtual environment of its own (e.g.
`python3 -m venv ../peers/tools/venv && ../peers/tools/venv/bin/pip install py-spy`, in a
`peers` folder beside the repository, as bench/serving keeps its peers).
Each configuration is prepared and started as run.py does (server on core 0), warmed up, then
loaded with wrk at concurrency `-c` while py-spy (on core 1, non-blocking, all threads, idle
stacks left out) samples it. CPU per request (utime + stime of the server over the sampled
interval / requests answered) is split over functions by their share of the non-idle
samples: "self" is time in the function itself, "total" includes what it calls. Prints, per
configuration, the threads and the top functions in microseconds per request, then the
functions whose inclusive cost differs most from `off`; writes profile.json beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from run_module import load_run

HERE = Path(__file__).resolve().parent


bench = load_run()


def frame_name(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (file.py)`: one row per function, not per line."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short})"


def parse_raw(path: Path) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """py-spy raw (collapsed) stacks -> self samples, inclusive samples, per-thread samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    n = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        if thread.startswith("process ") and len(frames) > 1:
            frames = frames[1:]
            thread = frames[0]
        threads[thread.split(" (")[0].strip('"')] += count
        names = [frame_name(f) for f in frames[1:]]
        if names:
            own[names[-1]] += count
            for name in set(names):
                total[name] += count
        n += count
    return own, total, threads, n


def profile_config(config: Any, ctx: Any, reference: dict[str, Any],
                   args: argparse.Namespace) -> dict[str, Any]:
    server = bench.server_of(config)
    body = server.body(ctx)
    script = bench.write_script(ctx.workdir, config.name.replace("+", "_"), bench.PATH, body)
    bench.serving.wait_quiet(None, 10.0)
    running = bench.Running(server, ctx, ctx.workdir / "logs" / f"profile-{config.name}.log")
    raw = ctx.workdir / f"{config.name}.raw"
    try:
        running.wait_ready(body, reference)
        bench.run_wrk(running.port, script, args.c, args.warmup)
        bench.serving.wait_quiet(running.tree, 10.0)
        spy = subprocess.Popen(
            ["taskset", "-c", str(bench.LOAD_CORE), args.py_spy, "record", "--pid",
             str(running.proc.pid), "--rate", str(args.rate), "--nonblocking", "--threads",
             "--format", "raw", "--output", str(raw), "--duration", str(args.duration + 2)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        before = running.tree.cpu_seconds()
        result = bench.run_wrk(running.port, script, args.c, args.duration)
        used = running.tree.cpu_seconds() - before
        _, err = spy.communicate(timeout=60)
        if not raw.is_file():
            raise RuntimeError(f"py-spy wrote nothing: {err[-1000:]}")
    finally:
        running.stop()
    own, total, threads, n = parse_raw(raw)
    us_per_req = used / result.ok_requests * 1e6
    scale = us_per_req / n if n else 0.0
    return {
        "rps": result.rps, "cpu_us_per_req": us_per_req, "samples": n,
        "threads_us": {t: v * scale for t, v in threads.most_common()},
        "self_us": {f: v * scale for f, v in own.most_common()},
        "total_us": {f: v * scale for f, v in total.most_common()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--py-spy", required=True, help="path to the py-spy executable")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("-c", type=int, default=64, help="wrk connections")
    parser.add_argument("--rate", type=int, default=500, help="samples per second")
    parser.add_argument("--configs", default=",".join(c.name for c in bench.CONFIGS))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--drift-slide-s", type=float, default=5.0)
    parser.add_argument("--records-store", choices=("database", "parquet"), default="database")
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {bench.LOAD_CORE})
    wanted = [c for c in bench.CONFIGS if c.name in args.configs.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="shipyard-monitoring-profile-"))
    (workdir / "logs").mkdir()
    reference = bench.save(workdir)
    ctx = bench.Context(workdir=workdir, model=workdir / bench.MODEL_FILE, row=reference["row"],
                        peers_dir=workdir)
    # The executable's name only: a machine's folders stay out of the committed results.
    out: dict[str, Any] = {"args": {**vars(args), "py_spy": Path(args.py_spy).name},
                           "configs": {}}
    for config in wanted:
        bench.prepare(ctx, config, args)
        res = out["configs"][config.name] = profile_config(config, ctx, reference, args)
        print(f"\n== {config.name}, c={args.c}: {res['rps']:.0f} req/s, "
              f"{res['cpu_us_per_req']:.1f} us CPU/req, {res['samples']} samples", flush=True)
        print("threads (us/req): " + ", ".join(f"{t} {v:.1f}"
                                               for t, v in res["threads_us"].items()))
        print(f"{'self us/req':>12} {'total us/req':>13}  function")
        for name, value in list(res["self_us"].items())[:args.top]:
            print(f"{value:12.2f} {res['total_us'][name]:13.2f}  {name}")
    base = out["configs"].get("off")
    for name, res in out["configs"].items():
        if base is None or name == "off":
            continue
        diff = {f: v - base["total_us"].get(f, 0.0) for f, v in res["total_us"].items()}
        print(f"\n== {name} against off: +{res['cpu_us_per_req'] - base['cpu_us_per_req']:.1f} "
              "us CPU/req; functions by inclusive us/req added")
        for f, v in sorted(diff.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"{v:10.2f}  {f}")
    (HERE / "profile.json").write_text(json.dumps(out, indent=2) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
