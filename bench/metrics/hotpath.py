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

SETUP = """
from shipyard.monitoring.metrics import ServiceMetrics
from shipyard.routing import CostConfig
m = ServiceMetrics.from_environ()
v = m.variant("bench", "champion", "1.0.0")
p = m.variant("bench", "priced", "1.0.0", CostConfig(per_request=0.0001, per_cpu_second=0.05))
"""


def measure() -> dict[str, float]:
    """Microseconds per call, best of 5."""
    out = {}
    for name, stmt in CALLS.items():
        best = min(timeit.repeat(stmt, SETUP, number=N, repeat=5))
        out[name] = best / N * 1e6
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
    for name in CALLS:
        print(f"| `{name}` | {single[name]:.2f} | {multi[name]:.2f} |")


if __name__ == "__main__":
    main()
