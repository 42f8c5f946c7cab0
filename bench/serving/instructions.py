"""Instructions per request, counted by valgrind's callgrind: a measure this host's noise
cannot move.

    .venv/bin/python bench/serving/instructions.py [--requests 300] [--servers floor,shipyard]

On this machine the CPU time of the same request changes by up to 2x from one minute to the
next (other tenants of the host). Callgrind counts the instructions a process executes, the
same count for the same work whatever else the host does, so two versions of the server
compare to within a fraction of a percent. It does not see what costs time without
instructions: the kernel (system calls, context switches between threads), cache misses,
waiting for the GIL. Read it beside `run.py`'s timings, not instead of them.

Each server (the same model, request and start command as run.py's) runs under
`valgrind --tool=callgrind --separate-threads=yes`; after its first correct answer and 50
warm-up requests the counters are zeroed, --requests requests are sent one at a time on one
keep-alive connection, and the counters dumped. Per request: the main thread (the event loop),
the busiest other thread (shipyard's model thread) and every other thread together. Those are
background work on timers (the access log, monitoring's flusher, the registry poll): under
valgrind a request takes ~50x longer, so timer-driven work is overcounted per request
and that column is an upper bound.

Writes instructions.md beside this file.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model import MODEL_FILE, save
from run import DEFAULT_PEERS_DIR, THREAD_ENV, check_answer, free_port, probe
from servers import HERE, SERVERS, Context

# shipyard as run.py serves it, with every kind of monitoring off: the difference is what
# metrics, sketches and drift cost a request.
VARIANTS = {"shipyard-unmonitored": replace(SERVERS["shipyard"], name="shipyard-unmonitored",
                                            env={"SHIPYARD_MONITORING": "false"})}
START_TIMEOUT_S = 900.0  # imports run ~50x slower under valgrind
WARMUP_REQUESTS = 50
OUT = HERE / "instructions.md"


def totals(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return 0


def count(name: str, ctx: Context, reference: dict[str, Any], requests: int,
          prepared: set[int]) -> dict[str, float]:
    """Instructions per request of one server: main thread, busiest other thread, the rest."""
    server = VARIANTS.get(name) or SERVERS[name]
    if server.prepare is not None and id(server.prepare) not in prepared:
        server.prepare(ctx)  # once per home: a variant shares its server's
        prepared.add(id(server.prepare))
    body = server.body(ctx)
    port = free_port()
    out = ctx.workdir / f"callgrind-{name.replace('+', '_').replace('@', '_')}.out"
    argv = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
            f"--callgrind-out-file={out}", *server.command(ctx, port)]
    env = {**os.environ, **THREAD_ENV, **server.env}
    bin_dir = ctx.venv(server.venv) / "bin"
    env.update(VIRTUAL_ENV=str(bin_dir.parent), PATH=f"{bin_dir}:{env.get('PATH', '')}")
    log = (ctx.workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen(argv, cwd=server.cwd or ctx.workdir, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while (answer := probe(port, server, body, timeout=30)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} gave no answer under valgrind; see {log.name}")
            time.sleep(1)
        check_answer(server, answer, reference)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {"Content-Type": "application/json"}

        def send(n: int) -> None:
            for _ in range(n):
                conn.request("POST", server.path, body, headers)
                reply = conn.getresponse()
                reply.read()
                if reply.status != 200:
                    raise RuntimeError(f"{name} answered {reply.status}")

        send(WARMUP_REQUESTS)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                       capture_output=True)
        send(requests)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                       capture_output=True)
        conn.close()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    # One file per thread of the dump: NAME.out.1-01 is the main thread.
    threads = {p.name.rsplit("-", 1)[1]: totals(p) for p in out.parent.glob(f"{out.name}.1-*")}
    main = threads.pop("01", 0)
    busiest = max(threads.values(), default=0)
    rest = sum(threads.values()) - busiest
    return {"main": main / requests, "busiest_other": busiest / requests,
            "others": rest / requests, "total": (main + busiest + rest) / requests}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--servers", default="floor,shipyard",
                        help="single-process servers of run.py (floor, floor@shipyard-venv, "
                             "shipyard, shipyard+batching) or shipyard-unmonitored")
    parser.add_argument("--peers-dir", default=os.environ.get("PEERS_DIR", str(DEFAULT_PEERS_DIR)))
    args = parser.parse_args()
    if subprocess.run(["which", "valgrind"], capture_output=True).returncode != 0:
        sys.exit("valgrind is not installed. Try: apt-get install -y valgrind")
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="shipyard-instructions-"))
    reference = save(workdir)
    ctx = Context(workdir=workdir, model=workdir / MODEL_FILE, row=list(reference["row"]),
                  peers_dir=Path(args.peers_dir))
    results: dict[str, dict[str, float]] = {}
    prepared: set[int] = set()
    for name in names:
        print(f"{name}: under valgrind (minutes)...", flush=True)
        results[name] = count(name, ctx, reference, args.requests, prepared)
        print(f"  {json.dumps({k: round(v) for k, v in results[name].items()})}", flush=True)
    base = results.get("floor", {}).get("total")
    lines = [
        "# Instructions per request (callgrind)", "",
        f"`python bench/serving/instructions.py {' '.join(sys.argv[1:])}`: {args.requests} "
        "single-row requests, one at a time, after 50 warm-up requests. Instructions, not "
        "time: system calls, context switches, cache misses and GIL waits are not in it "
        "(see the docstring).", "",
        "| server | event loop (main thread) | busiest other thread | other threads (timers; "
        "an upper bound) | total | loop + busiest vs the floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        core = r["main"] + r["busiest_other"]
        vs = f"{core / base:.2f}x" if base else "-"
        lines.append(f"| {name} | {r['main']:,.0f} | {r['busiest_other']:,.0f} | "
                     f"{r['others']:,.0f} | {r['total']:,.0f} | {vs} |")
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
