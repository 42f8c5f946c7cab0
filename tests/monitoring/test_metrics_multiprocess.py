"""Multi-process mode with real worker processes sharing one PROMETHEUS_MULTIPROC_DIR.

prometheus_client picks its mode when first imported, so every worker here is a fresh Python
process started with the variable in its environment, as the server's workers are.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from shipyard.monitoring.metrics import MULTIPROC_ENV, prepare_multiprocess

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and signals")

PRELUDE = """
import sys
from shipyard.monitoring.metrics import ServiceMetrics
from shipyard.routing import CostConfig
m = ServiceMetrics.from_environ()
v = m.variant("fraud", "champion", "1.2.0", CostConfig(per_request=0.01, currency="EUR"))
"""

SCRAPE = """
body, content_type = m.render(sys.argv[1] if len(sys.argv) > 1 else None)
sys.stdout.write(content_type + "\\n")
sys.stdout.write(body.decode())
"""


def env_for(folder: Path) -> dict[str, str]:
    return {**os.environ, MULTIPROC_ENV: str(folder)}


def run(folder: Path, code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(PRELUDE + code), *args],
                         env=env_for(folder), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def scrape(folder: Path, accept: str | None = None) -> tuple[str, dict[tuple, float]]:
    out = run(folder, SCRAPE, *([accept] if accept else []))
    content_type, body = out.split("\n", 1)
    parse = parse_om if content_type.startswith("application/openmetrics") else parse_text
    found = {}
    for family in parse(body):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return content_type, found


def series(found: dict[tuple, float], name: str, **labels: str) -> dict[tuple, float]:
    return {k: v for k, v in found.items()
            if k[0] == name and all(dict(k[1]).get(a) == b for a, b in labels.items())}


def total(found: dict[tuple, float], name: str, **labels: str) -> float:
    return sum(series(found, name, **labels).values())


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return prepare_multiprocess(tmp_path / "prom")


def start_worker(folder: Path, code: str) -> subprocess.Popen[str]:
    """A worker that records, says 'ready', and stays alive until killed."""
    worker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PRELUDE + code + "\nprint('ready', flush=True)\n"
                                               "sys.stdin.read()\n")],
        env=env_for(folder), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    return worker


def test_counts_of_every_worker_add_up_and_dead_workers_leave_the_gauges(folder: Path) -> None:
    alive = start_worker(folder, """
for _ in range(3):
    v.request(200, 0.002)
v.batch(10, 0.1)
v.set_inflight(2)
v.set_queue_depth(4)
""")
    try:
        run(folder, """
v.request(500, 0.5)
v.request(503, 0.01)
v.error("model_failure")
v.set_inflight(5)
v.set_queue_depth(1)
""")  # this worker exits: its live gauges must stop counting
        _, found = scrape(folder)
        assert total(found, "shipyard_requests_total", code="2xx") == 3
        assert total(found, "shipyard_requests_total", code="5xx") == 2
        assert total(found, "shipyard_request_duration_seconds_count") == 5
        assert total(found, "shipyard_request_duration_seconds_bucket", le="0.005") == 3
        assert total(found, "shipyard_errors_total", **{"class": "model_failure"}) == 1
        assert total(found, "shipyard_predictions_total") == 10
        assert total(found, "shipyard_cost_total", currency="EUR") == pytest.approx(0.05)
        # livesum over the live workers only: the exited one was reaped at scrape time
        assert series(found, "shipyard_inflight_requests") == {
            ("shipyard_inflight_requests", (("deployment", "fraud"), ("model_version", "1.2.0"),
                                            ("variant", "champion"))): 2.0
        }
        assert total(found, "shipyard_batch_queue_depth") == 4
        # resources: one series per live process, told apart by pid
        pids = {dict(k[1]).get("pid")
                for k in series(found, "shipyard_process_resident_memory_bytes")}
        assert str(alive.pid) in pids and len(pids) == 2  # the worker and the scraper
        assert all(v > 0 for v in series(found, "shipyard_process_threads").values())
        assert total(found, "shipyard_process_cpu_seconds_total") > 0

        alive.send_signal(signal.SIGKILL)  # no goodbye: the reaper must notice
        alive.wait(10)
        _, found = scrape(folder)
        assert total(found, "shipyard_inflight_requests") == 0
        assert total(found, "shipyard_requests_total", code="2xx") == 3  # counters stay
        pids = {dict(k[1]).get("pid")
                for k in series(found, "shipyard_process_resident_memory_bytes")}
        assert str(alive.pid) not in pids
    finally:
        if alive.poll() is None:
            alive.kill()
            alive.wait(10)


def test_openmetrics_from_the_merged_files(folder: Path) -> None:
    run(folder, "v.request(200, 0.001)\nv.violation('pii')\n")
    content_type, found = scrape(folder, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert total(found, "shipyard_requests_total", code="2xx") == 1
    assert total(found, "shipyard_violations_total", policy="pii") == 1


def test_a_restarted_run_starts_from_zero_after_prepare(folder: Path) -> None:
    run(folder, "v.request(200, 0.001)\n")
    prepare_multiprocess(folder)
    _, found = scrape(folder)
    assert total(found, "shipyard_requests_total", code="2xx") == 0


def test_a_mismatched_folder_is_refused(folder: Path, tmp_path: Path) -> None:
    code = f"""
from shipyard.errors import ConfigError
try:
    ServiceMetrics({str(tmp_path / 'elsewhere')!r})
except ConfigError as exc:
    print("refused:", exc.hint)
try:
    ServiceMetrics()
except ConfigError as exc:
    print("refused:", exc.hint)
"""
    out = run(folder, code)
    assert out.count("refused:") == 2
