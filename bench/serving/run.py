"""Serve one scikit-learn model from shipyard and from its peers, side by side, in one run.

    .venv/bin/python bench/serving/run.py [--duration 3] [--rounds 5] [--warmup 1] [--starts 3]
        [--peers floor,fastapi,bentoml,litserve,mlserver,mlflow,shipyard,shipyard+batching]

Every server gets the same StandardScaler + LogisticRegression pipeline (model.py) and the
same single row of 30 floats per request, and answers its label and probabilities. Each runs
from its own virtual environment under $PEERS_DIR (default: a `peers` folder beside the
repository; setup_peers.sh makes the missing ones, with pinned versions and the main venv's
scikit-learn), pinned to core 0; this script and wrk run on core 1. Only loopback traffic.

Per server: cold start (spawn to the first correct 200 on a real predict request, median of
--starts starts, the servers taking turns, each stopped before the next one starts, so no
idle server shares the core with another's start); then one more, untimed start each. Then
--rounds rounds: in each, every server in turn at concurrency 1, 8 and 64 (wrk -t1 -cN, --warmup s
discarded, then --duration s), so that a change in the host's speed during the run (other
tenants) falls on every server alike. Throughput and server CPU time per request (utime +
stime of the server's process tree from /proc) count every round; latency percentiles are the
median round's; non-2xx answers and socket errors are flagged when not 0. Then the memory
(RSS and PSS) of each process tree.
Then the paired slices: the servers of the tightest targets (floor, shipyard,
shipyard+batching, and LitServe, the closest peer) alone, at each concurrency, take turns in
--pair-slices slices of --pair-slice-s seconds each, the order reversing from slice to slice,
so that the two sides of a ratio are measured within a few seconds of each other, many times:
on a host whose speed swings by tens of percent within seconds, a round's points 5 to 10 s
apart can pair a fast moment with a slow one, and five of them rarely cancel that out.
A target is judged on the median of the paired slices' own ratios where both servers took
part in them, else on the median of the rounds' own ratios.

Prints a table and writes bench/serving/results.md and results.json, with the throughput of
every server relative to the raw-ASGI floor measured in the same run and shipyard's targets:

- unbatched shipyard >= 0.85x the floor's throughput at every concurrency, and >= 3x
  BentoML's, LitServe's and MLServer's;
- shipyard with adaptive batching >= 2.5x the floor's throughput at concurrency 64;
- batching does not tax a lone caller: p99 at concurrency 1 <= 1.2x the unbatched p99;
- cold start <= 1.5x the floor's.

Exits 1 when a target that could be measured is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import ProcessTree, WrkResult, by_thread, core_busy_seconds, run_wrk, write_script
from model import MODEL_FILE, save
from servers import DEFAULT_SERVERS, HERE, MAIN_VENV, SERVERS, Context, Server

# Outside the repository, so peer virtual environments are never committed.
DEFAULT_PEERS_DIR = Path(__file__).resolve().parents[3] / "peers"

RESULTS_MD = HERE / "results.md"
RESULTS_JSON = HERE / "results.json"
START_TIMEOUT_S = 180.0
SERVER_CORE, LOAD_CORE = 0, 1
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "BENTOML_DO_NOT_TRACK": "true", "DO_NOT_TRACK": "1",
              "MLFLOW_DISABLE_TELEMETRY": "true", "LITSERVE_DISABLE_TELEMETRY": "1"}
FLOOR_RATIO_MIN = 0.85
PEER_RATIO_MIN = 3.0
BATCH_RATIO_MIN = 2.5
BATCH_P99_MAX = 1.2
COLD_RATIO_MAX = 1.5
SLOW_PEERS = ("bentoml", "litserve", "mlserver")
NOISY_PCT = 10.0      # a point where other processes took more of the server core is noisy
QUIET_PCT = 5.0       # before a point or a start, wait for the core to be this quiet


# --- starting and stopping ---------------------------------------------------------------------

def free_port(span: int = 3) -> int:
    """A port P with P .. P+span-1 all free (MLServer also needs gRPC and metrics ports)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + span < 65535 and all(_free(port + i) for i in range(1, span)):
            return port
    raise RuntimeError("no free port span on 127.0.0.1")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def probe(port: int, server: Server, body: bytes, timeout: float = 10.0) -> Any:
    """POST the request; the parsed JSON answer on 200, None on any other outcome."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", server.path, body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        data = answer.read()
        return json.loads(data) if answer.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def check_answer(server: Server, data: Any, reference: dict[str, Any]) -> None:
    try:
        label, proba = server.parse(data)
    except Exception as exc:
        raise RuntimeError(f"{server.name}: cannot read label/probabilities from "
                           f"{json.dumps(data)[:300]} ({exc!r})") from exc
    expected = reference["probabilities"]
    if label != reference["label"] or len(proba) != len(expected) or any(
            abs(a - b) > 1e-6 for a, b in zip(proba, expected, strict=True)):
        raise RuntimeError(f"{server.name}: wrong answer {label}, {proba}; expected "
                           f"{reference['label']}, {expected}")


class Running:
    """One started server process (in its own session, so its whole group can be stopped)."""

    def __init__(self, server: Server, ctx: Context, log: Path) -> None:
        self.server, self.port = server, free_port()
        argv = server.command(ctx, self.port)
        if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
            argv = ["taskset", "-c", str(SERVER_CORE), *argv]
        env = {**os.environ, **THREAD_ENV, **server.env, "BENCH_MODEL": str(ctx.model),
               "BENTOML_HOME": str(ctx.workdir / "bentoml-home")}
        # As if the venv were activated: MLflow, for one, starts `uvicorn` from PATH.
        bin_dir = ctx.venv(server.venv) / "bin"
        env.update(VIRTUAL_ENV=str(bin_dir.parent), PATH=f"{bin_dir}:{env.get('PATH', '')}")
        self.log = log
        self._log_file = log.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, cwd=server.cwd or ctx.workdir, env=env,
                                     stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.tree = ProcessTree(self.proc.pid)

    def wait_ready(self, body: bytes, reference: dict[str, Any]) -> float:
        """Seconds from spawn to the first 200 on a real predict request (checked)."""
        deadline = self.started + START_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.server.name} exited ({self.proc.returncode}) before "
                                   f"answering:\n{self.tail()}")
            data = probe(self.port, self.server, body, timeout=START_TIMEOUT_S)
            if data is not None:
                elapsed = time.perf_counter() - self.started
                check_answer(self.server, data, reference)
                return elapsed
            time.sleep(0.01)
        raise RuntimeError(f"{self.server.name} gave no 200 within {START_TIMEOUT_S:.0f} s:\n"
                           f"{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        self._log_file.flush()
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        pids = self.tree.pids()
        for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        for pid in pids:  # descendants that left the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._log_file.close()


def others_on_core(tree: ProcessTree | None, window_s: float = 0.5) -> float:
    """Percent of the server core that processes outside `tree` used over `window_s`."""
    own0 = tree.cpu_seconds() if tree else 0.0
    busy0, t0 = core_busy_seconds(SERVER_CORE), time.perf_counter()
    time.sleep(window_s)
    own = (tree.cpu_seconds() - own0) if tree else 0.0
    busy = core_busy_seconds(SERVER_CORE) - busy0
    return max(0.0, 100 * (busy - own) / (time.perf_counter() - t0))


def wait_quiet(tree: ProcessTree | None, max_wait_s: float) -> float:
    """Wait (at most `max_wait_s`) until other processes leave the server core alone."""
    deadline = time.perf_counter() + max_wait_s
    while True:
        others = others_on_core(tree)
        if others <= QUIET_PCT or time.perf_counter() >= deadline:
            return others


# --- measuring -------------------------------------------------------------------------------

def point(result: WrkResult, cpu_s: float) -> dict[str, Any]:
    ok = result.ok_requests
    return {"rps": result.rps, "p50_ms": result.p50_ms, "p90_ms": result.p90_ms,
            "p99_ms": result.p99_ms, "max_ms": result.max_ms, "requests": result.requests,
            "seconds": result.seconds, "non_2xx": result.non_2xx, "errors": result.errors,
            "cpu_us_per_req": cpu_s / ok * 1e6 if ok else None}


def measure_point(running: Running, script: Path, c: int,
                  args: argparse.Namespace) -> dict[str, Any]:
    """One concurrency level; measured again (up to --retries times) while the server core
    is shared with other processes, keeping the least disturbed attempt."""
    best: dict[str, Any] | None = None
    for attempt in range(1 + args.retries):
        wait_quiet(running.tree, args.quiet_wait)
        if args.warmup > 0:
            run_wrk(running.port, script, c, args.warmup)
        before, core_before = running.tree.cpu_seconds(), core_busy_seconds(SERVER_CORE)
        threads_before = running.tree.cpu_by_thread()
        result = run_wrk(running.port, script, c, args.duration)
        used = running.tree.cpu_seconds() - before
        others = core_busy_seconds(SERVER_CORE) - core_before - used
        p = point(result, used)
        p["cpu_s_by_thread"] = {
            name: seconds - threads_before.get(name, 0.0)
            for name, seconds in running.tree.cpu_by_thread().items()}
        p["server_core_busy_pct"] = 100 * used / result.seconds
        p["server_core_others_pct"] = max(0.0, 100 * others / result.seconds)
        p["attempts"] = attempt + 1
        if best is None or p["server_core_others_pct"] < best["server_core_others_pct"]:
            best = p
        if best["server_core_others_pct"] <= NOISY_PCT or attempt == args.retries:
            break
        print(f"  {running.server.name}: c={c}: other processes took "
              f"{p['server_core_others_pct']:.0f}% of core {SERVER_CORE}; measuring again",
              flush=True)
    assert best is not None
    best["attempts"] = attempt + 1
    return best


def start_all(names: list[str], ctx: Context, reference: dict[str, Any],
              args: argparse.Namespace, logs: Path,
              results: dict[str, dict[str, Any]]) -> dict[str, tuple[Running, Path]]:
    """Prepare every server, then time its cold starts, the servers taking turns as in the
    measured rounds, each stopped before the next starts; then start each once more, untimed,
    for the rounds. Returns {name: (server, script)}; a server that fails gets its error in
    `results` and is left out."""
    plans: dict[str, tuple[bytes, Path]] = {}
    for name in names:
        server = SERVERS[name]
        try:
            if server.prepare is not None:
                server.prepare(ctx)
            body = server.body(ctx)
            plans[name] = (body, write_script(ctx.workdir, name.replace("+", "_").replace(
                "@", "_"), server.path, body))
        except Exception as exc:
            results[name]["error"] = str(exc).replace("\n", " ")[:1500]
            print(f"  {name}: FAILED to prepare: {exc}", flush=True)
    cold: dict[str, list[float]] = {name: [] for name in plans}
    running: dict[str, Running] = {}
    try:
        for index in range(args.starts):
            for name in list(plans):
                timed = _start(name, ctx, plans, reference, results, args,
                               logs / f"{name}-{index}.log")
                if timed is None:
                    continue
                started, seconds = timed
                cold[name].append(seconds)
                print(f"  {name}: start {index + 1}: first answer after {seconds:.2f} s",
                      flush=True)
                # Stopped even after its last timed start: a server kept running here would
                # share the core with every later server's start (idle servers still poll
                # and tick), a handicap for whoever comes last in the order.
                started.stop()
        for name in list(plans):  # the instances measured in the rounds; not timed
            kept = _start(name, ctx, plans, reference, results, args,
                          logs / f"{name}-serving.log")
            if kept is not None:
                running[name] = kept[0]
    except BaseException:
        for up in running.values():
            up.stop()
        raise
    for name in running:
        results[name]["cold_start_s"] = statistics.median(cold[name])
        results[name]["cold_starts_s"] = cold[name]
    return {name: (running[name], plans[name][1]) for name in running}


def _start(name: str, ctx: Context, plans: dict[str, tuple[bytes, Path]],
           reference: dict[str, Any], results: dict[str, dict[str, Any]],
           args: argparse.Namespace, log: Path) -> tuple[Running, float] | None:
    """Start `name` on a quiet core and wait for its first correct answer. On failure the
    error goes into `results`, the server leaves `plans`, and None is returned."""
    wait_quiet(None, args.quiet_wait)
    started: Running | None = None
    try:
        started = Running(SERVERS[name], ctx, log)
        return started, started.wait_ready(plans[name][0], reference)
    except Exception as exc:
        if started is not None:
            started.stop()
        results[name]["error"] = str(exc).replace("\n", " ")[:1500]
        print(f"  {name}: FAILED: {exc}", flush=True)
        del plans[name]
        return None


PAIRED = ("floor", "shipyard", "shipyard+batching", "litserve")


def pair_ratios(first: list[dict[str, Any]], second: list[dict[str, Any]],
                key: str = "rps") -> list[float]:
    """Each pair's own ratio, first over second (points taken together: a slice or a round)."""
    return [a[key] / b[key] for a, b in zip(first, second, strict=False) if b[key]]


def measure_slices(started: dict[str, tuple[Running, Path]],
                   results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    """The paired slices (see the module's docstring): results[name]["slices"][c] is a list of
    points, the i-th of every server taken within one turn."""
    names = [n for n in args.paired.split(",") if n in started]
    if args.pair_slices <= 0 or len(names) < 2:
        return
    print(f"paired slices ({', '.join(names)}):", flush=True)
    for c in args.concurrency:
        for name in names:  # the connections and the server's caches warm again
            running, script = started[name]
            run_wrk(running.port, script, c, 1.0)
        slices: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for index in range(args.pair_slices):
            for name in names if index % 2 == 0 else names[::-1]:
                running, script = started[name]
                before = running.tree.cpu_seconds()
                slices[name].append(point(run_wrk(running.port, script, c, args.pair_slice_s),
                                          running.tree.cpu_seconds() - before))
        for name in names:
            results[name].setdefault("slices", {})[str(c)] = slices[name]
        said = []
        for name in names:
            said.append(f"{name} {statistics.median(p['rps'] for p in slices[name]):.0f} req/s")
            if name != "floor" and "floor" in slices:
                ratio = statistics.median(pair_ratios(slices[name], slices["floor"]))
                said[-1] += f" ({ratio:.2f}x floor)"
        print(f"  c={c}: " + ", ".join(said), flush=True)


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One concurrency level over all rounds: throughput and CPU over every request measured,
    latency percentiles as the median round's, noise as the worst round's."""
    ok = sum(p["requests"] - p["non_2xx"] for p in rounds)
    seconds = sum(p["seconds"] for p in rounds)
    cpu_s = sum((p["cpu_us_per_req"] or 0.0) * (p["requests"] - p["non_2xx"]) / 1e6
                for p in rounds)
    return {
        "rps": sum(p["requests"] for p in rounds) / seconds if seconds else 0.0,
        **{k: statistics.median(p[k] for p in rounds) for k in ("p50_ms", "p90_ms", "p99_ms")},
        "max_ms": max(p["max_ms"] for p in rounds),
        "requests": sum(p["requests"] for p in rounds),
        "seconds": seconds,
        "non_2xx": sum(p["non_2xx"] for p in rounds),
        "errors": sum(p["errors"] for p in rounds),
        "cpu_us_per_req": cpu_s / ok * 1e6 if ok else None,
        "cpu_us_per_req_by_thread": {
            name: sum(p.get("cpu_s_by_thread", {}).get(name, 0.0) for p in rounds) / ok * 1e6
            for name in {n for p in rounds for n in p.get("cpu_s_by_thread", {})}} if ok else {},
        "server_core_busy_pct": statistics.mean(p["server_core_busy_pct"] for p in rounds),
        "server_core_others_pct": max(p["server_core_others_pct"] for p in rounds),
        "attempts": sum(p["attempts"] for p in rounds),
        "rounds": rounds,
    }


def measure_rounds(started: dict[str, tuple[Running, Path]], results: dict[str, dict[str, Any]],
                   reference: dict[str, Any], ctx: Context, args: argparse.Namespace) -> None:
    """Every concurrency of every running server, round after round, the servers taking
    turns: slow changes in the machine's speed (other tenants of the host) then touch every
    server alike, and each round gives its own ratio against the floor."""
    measured: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in started}
    # The pairs the tightest targets compare are measured back to back.
    first = ("floor", "shipyard", "shipyard+batching")
    order = sorted(started, key=lambda n: first.index(n) if n in first else len(first))
    for index in range(args.rounds):
        print(f"round {index + 1} of {args.rounds}:", flush=True)
        for c in args.concurrency:
            for name in [n for n in order if n in started]:
                running, script = started[name]
                server = running.server
                try:
                    p = measure_point(running, script, c, args)
                    check_answer(server, probe(running.port, server, server.body(ctx)),
                                 reference)
                except Exception as exc:
                    results[name]["error"] = str(exc).replace("\n", " ")[:1500]
                    print(f"  {name}: FAILED: {exc}", flush=True)
                    running.stop()
                    del started[name]
                    continue
                measured[name].setdefault(str(c), []).append(p)
                print(f"  {name}: c={c}: {p['rps']:.0f} req/s, p50 {p['p50_ms']:.2f} ms, "
                      f"p99 {p['p99_ms']:.2f} ms, cpu {p['cpu_us_per_req'] or 0:.0f} us/req, "
                      f"non-2xx {p['non_2xx']}, errors {p['errors']}, core {SERVER_CORE}: "
                      f"server {p['server_core_busy_pct']:.0f}%, others "
                      f"{p['server_core_others_pct']:.0f}%", flush=True)
    for name, (running, _) in started.items():
        results[name]["points"] = {c: combine(rounds) for c, rounds in measured[name].items()}
        results[name]["rss_mib"], results[name]["pss_mib"] = running.tree.memory_mib()
        results[name]["processes"] = len(running.tree.pids())


PREDICT_CODE = """
import json, sys, time, joblib, numpy as np

model = joblib.load(sys.argv[1])
row = np.asarray([json.loads(sys.argv[2])], dtype=np.float64)
out = {}
for rows in (1, 64):
    x = np.repeat(row, rows, axis=0)
    for _ in range(200):
        model.predict_proba(x)
    best = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(200):
            model.predict_proba(x)
        best.append((time.perf_counter() - t) / 200)
    out[rows] = min(best) * 1e6
print(json.dumps(out))
"""


def predict_cost(ctx: Context) -> dict[str, float]:
    """predict_proba alone, in the floor's venv on the server core: us for 1 and 64 rows."""
    argv = [str(ctx.venv("floor") / "bin" / "python"), "-c", PREDICT_CODE, str(ctx.model),
            json.dumps(ctx.row)]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        argv = ["taskset", "-c", str(SERVER_CORE), *argv]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300,
                          env={**os.environ, **THREAD_ENV})
    return json.loads(done.stdout) if done.returncode == 0 else {}


# --- environment -----------------------------------------------------------------------------

def setup(names: list[str], ctx: Context, skip: bool) -> dict[str, str]:
    """Create missing venvs; return {venv: why it is unusable} for those that failed."""
    venvs = sorted({SERVERS[n].venv for n in names} - {"main"})
    if venvs and not skip:
        env = {**os.environ, "PEERS_DIR": str(ctx.peers_dir),
               "MAIN_PY": str(MAIN_VENV / "bin" / "python")}
        subprocess.run(["bash", str(HERE / "setup_peers.sh"), *venvs], env=env, check=False,
                       timeout=3600)
    failed = {}
    for venv in venvs:
        if not (ctx.venv(venv) / ".shipyard-bench-stamp").is_file():
            log = ctx.peers_dir / venv / "install.log"
            lines = [ln for ln in (log.read_text(errors="replace").splitlines()
                                   if log.is_file() else []) if not ln.startswith("WARNING")]
            failed[venv] = "install failed: " + (lines[-1] if lines else "no venv")
    return failed


def versions(ctx: Context, server: Server) -> dict[str, str]:
    names = [server.package, "scikit-learn", "numpy", "uvicorn"]
    code = ("import importlib.metadata as m, json\nout = {}\n"
            f"for n in {names!r}:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\nprint(json.dumps(out))")
    done = subprocess.run([str(ctx.venv(server.venv) / "bin" / "python"), "-c", code],
                          capture_output=True, text=True, check=False, timeout=60)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def machine() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "python": platform.python_version(),
            "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr)
            else "", "loadavg_start": os.getloadavg()[0]}


# --- reporting -------------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def ratios(results: dict[str, dict[str, Any]], levels: list[int]) -> dict[str, dict[str, float]]:
    floor = results.get("floor", {}).get("points")
    if not floor:
        return {}
    out = {}
    for name, res in results.items():
        if res.get("points"):
            out[name] = {str(c): res["points"][str(c)]["rps"] / floor[str(c)]["rps"]
                         for c in levels if floor[str(c)]["rps"]}
    return out


def targets(results: dict[str, dict[str, Any]], levels: list[int]) -> list[dict[str, Any]]:
    def pts(name: str) -> dict[str, Any] | None:
        return results.get(name, {}).get("points")

    found: list[dict[str, Any]] = []

    def add(what: str, measured: tuple[list[float], str] | None, limit: float,
            at_least: bool, used: tuple[tuple[str, str], ...] = ()) -> None:
        # The median of the pairs' own ratios: paired slices seconds apart where there are
        # some, else the rounds' points.
        ratios, source = measured or ([], "rounds")
        value = statistics.median(ratios) if ratios else None
        met = None if value is None else (value >= limit if at_least else value <= limit)
        noisy = [f"{n} c={c}" for n, c in used if source == "rounds"
                 and (pts(n) or {}).get(c, {}).get("server_core_others_pct", 0) > NOISY_PCT]
        found.append({"target": what, "value": value, "rounds": ratios or [], "source": source,
                      "limit": limit, "at_least": at_least, "met": met, "noisy": noisy})

    def paired(a: str, b: str, c: str, key: str = "rps") -> tuple[list[float], str] | None:
        sliced = [results.get(n, {}).get("slices", {}).get(c) for n in (a, b)]
        if sliced[0] and sliced[1]:
            return pair_ratios(sliced[0], sliced[1], key), "slices"
        first, second = pts(a), pts(b)
        if not first or not second or c not in first or c not in second:
            return None
        return pair_ratios(first[c]["rounds"], second[c]["rounds"], key), "rounds"

    for c in map(str, levels):
        add(f"shipyard / floor throughput, c={c}", paired("shipyard", "floor", c),
            FLOOR_RATIO_MIN, True, (("shipyard", c), ("floor", c)))
    for peer in SLOW_PEERS:
        for c in map(str, levels):
            add(f"shipyard / {peer} throughput, c={c}", paired("shipyard", peer, c),
                PEER_RATIO_MIN, True, (("shipyard", c), (peer, c)))
    top = str(max(levels))
    add(f"shipyard+batching / floor throughput, c={top}",
        paired("shipyard+batching", "floor", top), BATCH_RATIO_MIN, True,
        (("shipyard+batching", top), ("floor", top)))
    add("shipyard+batching p99 / shipyard p99, c=1",
        paired("shipyard+batching", "shipyard", "1", "p99_ms"), BATCH_P99_MAX, False,
        (("shipyard+batching", "1"), ("shipyard", "1")))
    cold_f = results.get("floor", {}).get("cold_start_s")
    cold_s = results.get("shipyard", {}).get("cold_start_s")
    add("shipyard / floor cold start", ([cold_s / cold_f], "starts") if cold_s and cold_f
        else None, COLD_RATIO_MAX, False)
    return found


def slices_table(results: dict[str, dict[str, Any]], levels: list[int],
                 args: argparse.Namespace) -> list[str]:
    """The paired slices: medians, and each server's slice-by-slice ratio to the first."""
    names = [n for n in args.paired.split(",") if results.get(n, {}).get("slices")]
    if len(names) < 2:
        return []
    first = names[0]
    lines = ["", f"Paired slices ({args.pair_slices} per concurrency, {args.pair_slice_s:g} s "
             "each, the servers taking turns):", "",
             f"| server | c | req/s (median) | vs {first}, paired (median) | quartiles | "
             "server CPU us/req (median) |", "|---|---:|---:|---:|---|---:|"]
    for name in names:
        for c in map(str, levels):
            mine, theirs = results[name]["slices"].get(c), results[first]["slices"].get(c)
            if not mine or not theirs:
                continue
            ratios = pair_ratios(mine, theirs)
            low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else (0, 0, 0)
            cpu = [p["cpu_us_per_req"] for p in mine if p["cpu_us_per_req"]]
            lines.append(f"| {name} | {c} | {fmt(statistics.median(p['rps'] for p in mine))} | "
                         f"{statistics.median(ratios):.2f}x | {low:.2f} - {high:.2f} | "
                         f"{fmt(statistics.median(cpu) if cpu else None)} |")
    return lines


def threads_table(results: dict[str, dict[str, Any]], levels: list[int]) -> list[str]:
    """shipyard's CPU per request by thread, over every round: where the time goes."""
    lines = ["", "shipyard's server CPU per request by thread (us, every round; 'main' is the "
             "event loop, the deployment-variant thread runs the model):", "",
             "| server | c | by thread |", "|---|---:|---|"]
    for name, res in results.items():
        if not name.startswith("shipyard") or not res.get("points"):
            continue
        for c in levels:
            used = res["points"][str(c)].get("cpu_us_per_req_by_thread", {})
            lines.append(f"| {name} | {c} | {by_thread(used)} |")
    return lines if len(lines) > 5 else []


def report(results: dict[str, dict[str, Any]], levels: list[int], info: dict[str, Any],
           args: argparse.Namespace) -> tuple[str, list[dict[str, Any]]]:
    rel = ratios(results, levels)
    lines = ["| server | c | req/s | vs floor | p50 ms | p99 ms | server CPU us/req | "
             f"core {SERVER_CORE}: server / others % | non-2xx / errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, res in results.items():
        if not res.get("points"):
            continue
        for c in levels:
            p = res["points"][str(c)]
            bad = p["non_2xx"] or p["errors"]
            lines.append(
                f"| {name} | {c} | {fmt(p['rps'])} | {ratio_text(rel.get(name, {}).get(str(c)))}"
                f" | {fmt(p['p50_ms'], 2)} | {fmt(p['p99_ms'], 2)} | "
                f"{fmt(p['cpu_us_per_req'])} | {fmt(p['server_core_busy_pct'])} / "
                f"{fmt(p['server_core_others_pct'])}"
                f"{' **noisy**' if p['server_core_others_pct'] > NOISY_PCT else ''} | "
                f"{'**FLAG** ' if bad else ''}{p['non_2xx']} / {p['errors']} |")
    lines += slices_table(results, levels, args)
    lines += threads_table(results, levels)
    lines += ["", "| server | cold start s (median) | cold starts s | RSS MiB | PSS MiB | "
              "processes | versions |", "|---|---:|---|---:|---:|---:|---|"]
    for name, res in results.items():
        vers = ", ".join(f"{k} {v}" for k, v in res.get("versions", {}).items())
        if "error" in res:
            lines.append(f"| {name} | failed | | | | | {vers} |")
            continue
        lines.append(
            f"| {name} | {fmt(res['cold_start_s'], 2)} | "
            f"{', '.join(f'{s:.2f}' for s in res['cold_starts_s'])} | {fmt(res['rss_mib'])} | "
            f"{fmt(res['pss_mib'])} | {res['processes']} | {vers} |")
    found = targets(results, levels)
    lines += ["", "| shipyard target | value (median of paired ratios) | from | each pair "
              "(slices: quartiles) | limit | met |", "|---|---:|---|---|---:|---|"]
    for t in found:
        met = {None: "not measured", True: "yes", False: "**NO**"}[t["met"]]
        if t["noisy"] and t["met"] is not None:
            met += f" (noisy: {', '.join(t['noisy'])})"
        each = ", ".join(f"{r:.2f}" for r in t["rounds"]) if len(t["rounds"]) > 1 else ""
        source = t.get("source", "rounds")
        if source == "slices" and len(t["rounds"]) >= 4:
            low, _, high = statistics.quantiles(t["rounds"], n=4)
            each = f"{low:.2f} - {high:.2f}"
        origin = f"{len(t['rounds'])} {source}" if len(t["rounds"]) > 1 else ""
        lines.append(f"| {t['target']} | {fmt(t['value'], 2)} | {origin} | {each} | "
                     f"{'>=' if t['at_least'] else '<='} {t['limit']} | {met} |")
    same_venv = results.get("floor@shipyard-venv", {}).get("cold_start_s")
    cold_s = results.get("shipyard", {}).get("cold_start_s")
    if same_venv and cold_s:
        lines += ["", "Diagnostic, not a target: shipyard's cold start is "
                  f"{cold_s / same_venv:.2f}x that of the floor's code run from shipyard's venv."]
    failures = [f"- **{n}**: {r['error']}" for n, r in results.items() if "error" in r]
    if failures:
        lines += ["", "Servers that could not be measured:", "", *failures]
    text = "\n".join(lines)
    header = [
        "# Serving benchmark: shipyard and its peers, one model, one run", "",
        f"Run on {info['date']}: `{info['command']}`", "",
        f"Machine: {info['nproc']} cores ({info['cpu']}), Linux {info['kernel']}, Python "
        f"{info['python']}, {info['wrk']}. Load average (1 min) {info['loadavg_start']:.2f} at "
        f"the start, {info['loadavg_end']:.2f} at the end: other work on the machine during "
        "the run shows up as noise.", "",
        f"Each server pinned to core {SERVER_CORE}, wrk (`-t1 -cN`) and this harness on core "
        f"{LOAD_CORE}; {args.warmup:g} s warm-up then {args.duration:g} s per concurrency "
        f"in each of {args.rounds} rounds, then {args.pair_slices} paired slices of "
        f"{args.pair_slice_s:g} s per concurrency for {args.paired.replace(',', ', ')}; "
        "single-row JSON requests (30 floats) against a StandardScaler + LogisticRegression "
        "pipeline; every answer's label and probabilities checked against the model's. "
        "Server CPU is utime + stime of the server's whole process tree over the measured "
        "interval, divided by the requests answered; 'core 0: server / others' is the share "
        "of core 0 that the server used and that other processes took from it (noise; "
        "should be near 0). Memory: the process tree after the load "
        "(PSS counts pages shared between forked workers once).", "",
        *([f"The model alone (`predict_proba` in the floor's venv on core {SERVER_CORE}, best "
           f"of 7 x 200 calls): {info['predict_us']['1']:.0f} us for 1 row, "
           f"{info['predict_us']['64']:.0f} us for 64 rows.", ""]
          if info.get("predict_us") else []),
        "Servers:", "", *[f"- **{n}**: {SERVERS[n].note}" for n in results], "", "",
    ]
    return "\n".join(header) + text + "\n", found


# --- main ------------------------------------------------------------------------------------

def compile_shipyard() -> None:
    """Write shipyard's bytecode, as pip wrote every peer's at install. An editable install
    under PYTHONDONTWRITEBYTECODE=1 (as on CI machines) never writes it, and then every start
    compiles 26,000 lines (~0.3 s of a cold start) that no peer compiles."""
    import compileall

    import shipyard

    compileall.compile_dir(str(Path(shipyard.__file__).parent), quiet=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds per point and round")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of every point, the servers taking turns within each")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each point")
    parser.add_argument("--starts", type=int, default=3, help="cold starts per server")
    parser.add_argument("--retries", type=int, default=2,
                        help=f"measure a point again when other processes took more than "
                             f"{NOISY_PCT:g}%% of the server core")
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="seconds to wait, at most, for the server core to be quiet "
                             "before each point and start")
    parser.add_argument("--pair-slices", type=int, default=20,
                        help="paired slices per concurrency for the --paired servers "
                             "(0: none; targets then come from the rounds)")
    parser.add_argument("--paired", default=",".join(PAIRED),
                        help="the servers of the paired slices, the first being the one "
                             "printed ratios are against")
    parser.add_argument("--pair-slice-s", type=float, default=1.0,
                        help="seconds per paired slice (whole seconds: wrk's -d)")
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--peers", default=",".join(DEFAULT_SERVERS),
                        help=f"comma-separated, from: {', '.join(SERVERS)}")
    parser.add_argument("--peers-dir", default=os.environ.get("PEERS_DIR", str(DEFAULT_PEERS_DIR)))
    parser.add_argument("--no-setup", action="store_true",
                        help="do not create missing peer venvs")
    parser.add_argument("--out", default=str(RESULTS_MD), help="results markdown file")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    names = [n.strip() for n in args.peers.split(",") if n.strip()]
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        parser.error(f"Got unknown server(s) {unknown}. Expected some of {list(SERVERS)}.")
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed. Try: apt-get install -y wrk")
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {LOAD_CORE})

    info = machine()
    info["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["command"] = " ".join(["python bench/serving/run.py", *sys.argv[1:]])
    workdir = Path(tempfile.mkdtemp(prefix="shipyard-serving-bench-"))
    reference = save(workdir)
    ctx = Context(workdir=workdir, model=workdir / MODEL_FILE, row=reference["row"],
                  peers_dir=Path(args.peers_dir))
    failed_venvs = setup(names, ctx, args.no_setup)
    compile_shipyard()

    if "floor" not in failed_venvs:
        wait_quiet(None, args.quiet_wait)
        info["predict_us"] = predict_cost(ctx)
        print(f"predict_proba alone on core {SERVER_CORE}: {info['predict_us']} us "
              "(1 row, 64 rows)", flush=True)
    results: dict[str, dict[str, Any]] = {}
    logs = ctx.workdir / "logs"
    logs.mkdir(exist_ok=True)
    started: dict[str, tuple[Running, Path]] = {}
    try:
        for name in names:
            server = SERVERS[name]
            results[name] = {"note": server.note, "versions": versions(ctx, server)}
            if server.venv in failed_venvs:
                results[name]["error"] = failed_venvs[server.venv]
                print(f"{name}: skipped: {failed_venvs[server.venv]}", flush=True)
        print("cold starts:", flush=True)
        started = start_all([n for n in names if "error" not in results[n]], ctx, reference,
                            args, logs, results)
        measure_rounds(started, results, reference, ctx, args)
        measure_slices(started, results, args)
    finally:
        for running, _ in started.values():
            running.stop()

    info["loadavg_end"] = os.getloadavg()[0]
    text, found = report(results, args.concurrency, info, args)
    print("\n" + text)
    Path(args.out).write_text(text)
    json_path = Path(args.out).with_suffix(".json")
    json_path.write_text(json.dumps({"machine": info, "results": results, "targets": found,
                                     "ratios_vs_floor": ratios(results, args.concurrency)},
                                    indent=2) + "\n")
    if any("error" in r for r in results.values()):
        print(f"wrote {args.out} and {json_path}; server logs kept in {workdir / 'logs'}")
    else:
        print(f"wrote {args.out} and {json_path}")
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(t["met"] is False for t in found) else 0


if __name__ == "__main__":
    sys.exit(main())
