"""Per-call cost of the VariantMetrics hot path, single- and multi-process mode.

    .venv/bin/python bench/metrics/hotpath.py

Each call is timed over many repetitions (best of 5 runs of timeit); multi-process mode runs
in a child process whose environment names a fresh PROMETHEUS_MULTIPROC_DIR, because
prometheus_client picks its mode when first imported. docs/metrics.md quotes the output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import timeit

N = 200_000

CALLS = {
    "request(200, 0.003)": "v.request(200, 0.003)",
    "request(200, 0.003) with a per-request price": "p.request(200, 0.003)",
    "error('model_failure')": "v.error('model_failure')",
    "timeout()": "v.timeout()",
    "fallback()": "v.fallback()",
    "batch(32, 0.004)": "v.batch(32, 0.004)",
    "batch(32, 0.004) with a CPU price": "p.batch(32, 0.004)",
    "violation('pii')": "v.violation('pii')",
    "set_inflight(7)": "v.set_inflight(7)",
    "set_queue_depth(7)": "v.set_queue_depth(7)",
}
# Calls that count many requests at once, as the server's monitor does once a second: the
# figure is per request (calls are fewer, so that each run takes about as long).
BULK = 3_000
BULK_CALLS = {
    f"requests(statuses, seconds), per request, {BULK:,} at a time": "v.requests(S, L)",
}

SETUP = """
from shipyard.monitoring.metrics import ServiceMetrics
from shipyard.routing import CostConfig
m = ServiceMetrics.from_environ()
v = m.variant("bench", "champion", "1.0.0")
p = m.variant("bench", "priced", "1.0.0", CostConfig(per_request=0.0001, per_cpu_second=0.05))
import numpy as np
rng = np.random.default_rng(0)
S = rng.choice([200, 200, 200, 422, 503], BULK)
L = rng.exponential(0.003, BULK)
"""


def measure() -> dict[str, float]:
    """Microseconds per call, best of 5."""
    out = {}
    for name, stmt in CALLS.items():
        best = min(timeit.repeat(stmt, SETUP, number=N, repeat=5, globals={"BULK": BULK}))
        out[name] = best / N * 1e6
    calls = max(1, N // BULK)
    for name, stmt in BULK_CALLS.items():
        best = min(timeit.repeat(stmt, SETUP, number=calls, repeat=5, globals={"BULK": BULK}))
        out[name] = best / (calls * BULK) * 1e6
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(measure()))
        return
    single = measure()
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder}
        out = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True,
                             capture_output=True, text=True).stdout
        multi = json.loads(out)
    print(f"python {sys.version.split()[0]}, {N:,} calls each, best of 5, microseconds per call")
    print("| call | single process | multi-process |")
    print("|---|---:|---:|")
    for name in [*CALLS, *BULK_CALLS]:
        print(f"| `{name}` | {single[name]:.2f} | {multi[name]:.2f} |")


if __name__ == "__main__":
    main()
