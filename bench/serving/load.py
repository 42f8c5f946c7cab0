"""Load and process measurement: wrk with a Lua script, CPU and memory of a process tree.

`run_wrk` drives one server with `wrk -t1 -cN` (one connection at c=1) for a bounded time and
returns requests, throughput, latency percentiles and error counts that a Lua `done()` hook
prints as one JSON line. `ProcessTree` reads /proc: CPU seconds (utime + stime of every live
process in the tree, plus the cutime + cstime of children it has already reaped) and memory
(RSS summed, and PSS, which counts a page shared by forked workers once).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MARKER = "WRKJSON "

LUA = """\
wrk.method = "POST"
wrk.path = {path}
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"mean_us":%.1f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""


def lua_string(text: str) -> str:
    """A Lua long-bracket string literal holding `text` verbatim."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def write_script(folder: Path, name: str, path: str, body: bytes) -> Path:
    script = folder / f"{name}.lua"
    script.write_text(LUA.format(path=lua_string(path), body=lua_string(body.decode()),
                                 marker=MARKER))
    return script


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int          # socket errors: connect, read, write, timeout
    non_2xx: int         # answers with a status above 399

    @property
    def ok_requests(self) -> int:
        return max(0, self.requests - self.non_2xx)


def run_wrk(port: int, script: Path, connections: int, seconds: float) -> WrkResult:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {done.returncode}): {done.stderr or done.stdout}")
    raw = json.loads(line[len(MARKER):])
    seconds_run = raw["duration_us"] / 1e6
    return WrkResult(
        requests=raw["requests"], seconds=seconds_run,
        rps=(raw["requests"] - raw["status"]) / seconds_run,
        p50_ms=raw["p50_us"] / 1e3, p90_ms=raw["p90_us"] / 1e3, p99_ms=raw["p99_us"] / 1e3,
        max_ms=raw["max_us"] / 1e3,
        errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
        non_2xx=raw["status"])


class ProcessTree:
    """The process `pid` and all its descendants, read from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def pids(self) -> list[int]:
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                with contextlib.suppress(OSError):
                    todo.extend(int(c) for c in (task / "children").read_text().split())
        return found

    def cpu_seconds(self) -> float:
        ticks = 0
        for pid in self.pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            # utime, stime, cutime, cstime (stat fields 14 to 17).
            ticks += sum(int(v) for v in _fields(stat)[11:15])
        return ticks / CLOCK_TICKS

    def cpu_by_thread(self) -> dict[str, float]:
        """CPU seconds of the tree's threads by name (threads of one name summed; a process's
        first thread is "main"). shipyard names its own threads (`shipyard.cpu.name_thread`):
        the model thread is its deployment and variant, then access-log, records-NAME,
        monitor."""
        found: dict[str, float] = {}
        for pid in self.pids():
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    stat = (task / "stat").read_text()
                except OSError:
                    continue
                name = ("main" if task.name == str(pid)
                        else stat[stat.index("(") + 1:stat.rindex(")")])
                ticks = sum(int(v) for v in _fields(stat)[11:13])  # the thread's utime, stime
                found[name] = found.get(name, 0.0) + ticks / CLOCK_TICKS
        return found

    def memory_mib(self) -> tuple[float, float]:
        """(RSS summed over the tree, PSS summed over the tree) in MiB."""
        rss = pss = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    key, _, rest = line.partition(":")
                    if key == "Rss":
                        rss += int(rest.split()[0])
                    elif key == "Pss":
                        pss += int(rest.split()[0])
            except OSError:
                continue
        return rss / 1024, pss / 1024


def _fields(stat: str) -> list[str]:
    """/proc/PID/stat's fields after the command name (which may hold spaces): index 0 is
    field 3, the state."""
    return stat[stat.rindex(")") + 2:].split()


def by_thread(us: dict[str, float]) -> str:
    """"name us, ..." for CPU per request by thread, the largest first (what shows in the
    benchmarks' thread tables)."""
    return ", ".join(f"{name} {value:.1f}" for name, value in
                     sorted(us.items(), key=lambda item: -item[1]) if value >= 0.05) or "-"


def core_busy_seconds(core: int) -> float:
    """CPU seconds core `core` has spent busy since boot (all processes, from /proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = (
                int(v) for v in line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
    return 0.0
