"""Which requests' inputs and outputs the monitor keeps for its flush: all while records are on,
about the sketch's share otherwise; every request is counted either way."""

from __future__ import annotations

import io
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.monitoring.metrics import ServiceMetrics
from shipyard.monitoring.monitor import (
    KEEP_MARGIN,
    SKETCH_PER_FLUSH,
    KeepShare,
    Monitor,
    Served,
)
from shipyard.monitoring.records import RecordWriter
from shipyard.monitoring.recordstore import RecordStore
from shipyard.registry.database import Database
from shipyard.routing import MonitoringConfig
from shipyard.runtimes.model import Model, load_bundle
from shipyard.serving.accesslog import AccessLog

BURST = 10_000


@pytest.fixture
def model(packaged: Path) -> Model:
    return load_bundle(packaged)


def _context(model: Model, rows: pd.DataFrame) -> dict[str, Any]:
    batch = model.prepare(rows)
    return {"key": ("tumours", "main", model.version), "rows": len(batch), "batch": batch,
            "outputs": model.run(batch), "variant": "main", "version": model.version}


NO_RECORDS = MonitoringConfig.model_validate({"records": {"sample": 0}})


def _monitor(model: Model, records: Any = None, config: MonitoringConfig = NO_RECORDS
             ) -> Monitor:
    monitor = Monitor(ServiceMetrics(), records=records)
    monitor.attach("tumours", {"main": Served("main", model)}, config)
    return monitor


def _send(monitor: Monitor, context: dict[str, Any], n: int, first: int = 0) -> None:
    for i in range(first, first + n):
        monitor.finish(context, f"req-{i}", 200, 0.002)


def _kept(monitor: Monitor) -> int:
    (variant,) = monitor.variants.values()
    return sum(1 for seen in variant.seen if seen[4] is not None)


def test_under_load_about_the_sketch_share_is_kept_and_every_request_counted(
    model: Model, mixed_data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    context = _context(model, mixed_data[0].iloc[:1])
    monitor = _monitor(model)
    (variant,) = monitor.variants.values()
    assert variant.reference is not None and variant.keep.value == 1.0
    _send(monitor, context, BURST)
    assert _kept(monitor) == BURST  # before the first flush: everything
    monitor.flush()
    share = KEEP_MARGIN * SKETCH_PER_FLUSH / BURST
    assert variant.keep.value == pytest.approx(share)
    sketched = variant.window(variant.buckets[-1][0] + 1).rows
    assert sketched == SKETCH_PER_FLUSH

    _send(monitor, context, BURST, first=BURST)
    # Binomial(BURST, share): these bounds are 11 standard deviations wide.
    spread = 11 * math.sqrt(BURST * share * (1 - share))
    assert BURST * share - spread < _kept(monitor) < BURST * share + spread
    monitor.flush()
    assert variant.window(variant.buckets[-1][0] + 1).rows == 2 * SKETCH_PER_FLUSH
    # Counted whether kept or not: traffic and the Prometheus counter see all 20,000.
    assert variant.traffic.figures(variant.buckets[-1][0] + 1, 300.0)["requests"] == 2 * BURST
    body, _ = monitor.render_metrics()
    assert re.search(rb'shipyard_requests_total\{[^}]*code="2xx"[^}]*\} 20000\.0', body)
    monitor.close()


def test_light_traffic_keeps_everything(
    model: Model, mixed_data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    monitor = _monitor(model)
    context = _context(model, mixed_data[0].iloc[:3])
    _send(monitor, context, 500)
    monitor.flush()
    (variant,) = monitor.variants.values()
    assert variant.keep.value == 1.0
    _send(monitor, context, 500, first=500)
    assert _kept(monitor) == 500
    monitor.close()


def test_records_on_keep_every_request_for_its_record(
    tmp_path: Path, model: Model, mixed_data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'registry.db'}", timeout_s=10)
    store = RecordStore(database)
    config = MonitoringConfig.model_validate({"records": {"sample": 1.0}})

    def writer(deployment: str, monitoring: MonitoringConfig) -> RecordWriter:
        return RecordWriter(store, monitoring.records, deployment=deployment, key=b"k" * 32,
                            purge_every_s=None)

    monitor = _monitor(model, writer, config)
    context = _context(model, mixed_data[0].iloc[:1])
    _send(monitor, context, BURST)
    monitor.flush()
    (variant,) = monitor.variants.values()
    assert variant.keep.value == 1.0  # every request may be recorded
    # The sketches still take their share only.
    assert variant.window(variant.buckets[-1][0] + 1).rows == SKETCH_PER_FLUSH
    _send(monitor, context, BURST, first=BURST)
    assert _kept(monitor) == BURST
    monitor.close()  # drains the writer
    stored = store.records("tumours", columns=["request_id"])["request_id"]
    assert stored.nunique() == 2 * BURST
    database.close()


def test_without_a_reference_nothing_is_kept_until_records_are_turned_on(
    model: Model, mixed_data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    monitor = _monitor(model)
    (variant,) = monitor.variants.values()
    variant.reference = None  # a bundle packaged without a profile: no drift to sketch for
    context = _context(model, mixed_data[0].iloc[:1])
    _send(monitor, context, 10)
    monitor.flush()
    assert variant.keep.value == 0.0
    _send(monitor, context, 10, first=10)
    assert _kept(monitor) == 0
    # A revision that turns records on keeps every request from its first one: the attach
    # sets the share, and flushes set it under the same lock, so none can lower it after.
    on = MonitoringConfig.model_validate({"records": {"sample": 0.5}})
    monitor.attach("tumours", {"main": Served("main", model)}, on)
    assert variant.keep.value == 1.0
    _send(monitor, context, 10, first=20)
    assert _kept(monitor) == 10
    _send(monitor, context, BURST, first=30)
    monitor.flush()
    assert variant.keep.value == 1.0
    monitor.close()


def test_errors_timeouts_and_fallbacks_keep_their_context_and_are_counted(
    model: Model, mixed_data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    monitor = _monitor(model)
    (variant,) = monitor.variants.values()
    variant.keep.value = 0.0  # as under heavy load with no reference: nothing else kept
    context = _context(model, mixed_data[0].iloc[:1])
    fell_back = {**context, "timeout": True, "fallback": True, "answered_by": ("fallback", "1")}
    failed = {**context, "outputs": None, "error": "model_failure"}
    _send(monitor, context, 5)
    monitor.finish(fell_back, "req-slow", 200, 0.5)
    monitor.finish(failed, "req-failed", 503, 0.01)
    assert _kept(monitor) == 2
    monitor.flush()
    figures = variant.traffic.figures(time.time() + 1, 300.0)
    assert figures["requests"] == 7
    # One in seven each: the fallback timed out; the failure was an error.
    assert figures["timeout_rate"] == figures["fallback_rate"] == figures["error_rate"] == 1 / 7
    body, _ = monitor.render_metrics()
    assert re.search(rb'shipyard_fallbacks_total\{[^}]*deployment="tumours"[^}]*\} 1\.0', body)
    monitor.close()


def test_a_flush_first_drains_what_is_queued_upstream(
    model: Model, mixed_data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    # As the server wires it: its access log's queue hands finished requests to the monitor.
    log = AccessLog(io.StringIO(), enabled=False)
    monitor = _monitor(model)
    log.observe(lambda entries: monitor.finished(
        (e[0], e[1], e[4], e[5] / 1000.0, e[-1]) for e in entries))
    monitor.upstream = log.drain
    context = _context(model, mixed_data[0].iloc[:1])
    for i in range(25):
        log.record(f"req-{i}", "POST", "/", 200, 1.0, "tumours", "main", model.version, 1,
                   None, None, context)
    monitor.flush()  # as the feedback route does: every request finished so far is counted
    (variant,) = monitor.variants.values()
    assert variant.traffic.figures(time.time() + 1, 300.0)["requests"] == 25
    log.close()
    monitor.close()


def test_the_server_draws_from_the_share_the_monitor_sets_and_hands_over_keys_for_the_rest(
    model: Model, mixed_data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    # As the fleet wires it: the variant's KeepShare goes to the monitor inside Served.
    keep = KeepShare()
    monitor = Monitor(ServiceMetrics())
    monitor.attach("tumours", {"main": Served("main", model, keep=keep)}, NO_RECORDS)
    (variant,) = monitor.variants.values()
    assert variant.keep is keep and keep.value == 1.0
    context = _context(model, mixed_data[0].iloc[:1])
    _send(monitor, context, BURST)
    monitor.flush()
    share = KEEP_MARGIN * SKETCH_PER_FLUSH / BURST
    assert keep.value == pytest.approx(share)  # what the server's event loop now draws from
    drawn = sum(keep.draw() for _ in range(BURST))
    spread = 11 * math.sqrt(BURST * share * (1 - share))
    assert BURST * share - spread < drawn < BURST * share + spread

    # A request not drawn comes as its variant's key: counted, nothing of it kept.
    now = time.time()
    monitor.finished([(now, f"key-{i}", 200, 0.001, context["key"]) for i in range(100)])
    assert _kept(monitor) == 0 and len(variant.seen) == 100
    monitor.finished([(now, "gone", 200, 0.001, ("tumours", "retired", "0"))])  # unknown: skipped
    assert len(variant.seen) == 100
    monitor.flush()
    assert variant.traffic.figures(now + 1, 300.0)["requests"] == BURST + 100

    # A new revision's variant brings its own KeepShare; the share carries over to it.
    fresh = KeepShare()
    monitor.attach("tumours", {"main": Served("main", model, keep=fresh)}, NO_RECORDS)
    assert variant.keep is fresh and fresh.value == keep.value
    assert KeepShare(0.0).draw() is False and KeepShare(1.0).draw() is True
    monitor.close()
