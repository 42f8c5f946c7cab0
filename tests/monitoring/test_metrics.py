"""ServiceMetrics and VariantMetrics in one process: series, labels, cost, cap, exposition."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from shipyard.errors import ConfigError
from shipyard.monitoring.metrics import (
    ERROR_CLASSES,
    LATENCY_BUCKETS,
    MULTIPROC_ENV,
    OTHER,
    ServiceMetrics,
    mark_dead,
    prepare_multiprocess,
)
from shipyard.routing import CostConfig

LABELS = {"deployment": "fraud", "variant": "champion", "model_version": "1.2.0"}


def samples(metrics: ServiceMetrics, accept: str | None = None) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, parsed back from the exposition."""
    body, content_type = metrics.render(accept)
    parse = parse_om if content_type.startswith("application/openmetrics-text") else parse_text
    found = {}
    for family in parse(body.decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found: dict[tuple, float], name: str, **labels: str) -> float:
    want = tuple(sorted({**LABELS, **labels}.items()))
    return found[(name, want)]


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics()


def test_requests_are_counted_by_status_class_and_timed(metrics: ServiceMetrics) -> None:
    v = metrics.variant(**LABELS)
    for status, seconds in [(200, 0.0003), (201, 0.004), (404, 0.002), (503, 2.5), (302, 0.01)]:
        v.request(status, seconds)
    found = samples(metrics)
    assert value(found, "shipyard_requests_total", code="2xx") == 2
    assert value(found, "shipyard_requests_total", code="4xx") == 1
    assert value(found, "shipyard_requests_total", code="5xx") == 1
    assert value(found, "shipyard_requests_total", code="3xx") == 1
    assert value(found, "shipyard_request_duration_seconds_count") == 5
    assert value(found, "shipyard_request_duration_seconds_sum") == pytest.approx(2.5163)
    assert value(found, "shipyard_request_duration_seconds_bucket", le="0.0005") == 1
    assert value(found, "shipyard_request_duration_seconds_bucket", le="5.0") == 5


def test_series_exist_at_zero_before_any_traffic(metrics: ServiceMetrics) -> None:
    metrics.variant(**LABELS)
    found = samples(metrics)
    for code in ("2xx", "4xx", "5xx"):
        assert value(found, "shipyard_requests_total", code=code) == 0
    for cls in ERROR_CLASSES:
        assert value(found, "shipyard_errors_total", **{"class": cls}) == 0
    assert value(found, "shipyard_timeouts_total") == 0
    assert value(found, "shipyard_fallbacks_total") == 0


@pytest.mark.parametrize("seconds", [math.nan, math.inf, -math.inf, -0.5])
def test_nasty_latencies_count_the_request_but_never_poison_the_histogram(
    metrics: ServiceMetrics, seconds: float
) -> None:
    v = metrics.variant(**LABELS)
    v.request(200, 0.01)
    v.request(200, seconds)
    found = samples(metrics)
    assert value(found, "shipyard_requests_total", code="2xx") == 2
    assert value(found, "shipyard_request_duration_seconds_count") == 1
    assert value(found, "shipyard_request_duration_seconds_sum") == pytest.approx(0.01)


def test_many_requests_at_once_expose_what_one_at_a_time_does() -> None:
    """The monitor counts requests in bulk; the exposition must be that of `request` per
    pair, nasty statuses and latencies included (this also pins the prometheus_client
    internals that `observe_many` reads)."""
    rng = np.random.default_rng(7)
    bounds = list(LATENCY_BUCKETS)  # exactly on a bound, and just past it
    seconds = np.concatenate([
        rng.exponential(0.05, 500), bounds, np.nextafter(bounds, np.inf),
        [0.0, -0.5, math.nan, math.inf, -math.inf, 11.0],
    ])
    statuses = rng.choice([200, 201, 302, 404, 422, 429, 503, 0, 42, 600, -200], len(seconds))
    one, bulk = ServiceMetrics(), ServiceMetrics()
    priced = CostConfig(per_request=0.25)
    single = one.variant(**LABELS, cost=priced)
    for status, value_s in zip(statuses.tolist(), seconds.tolist(), strict=True):
        single.request(status, value_s)
    many = bulk.variant(**LABELS, cost=priced)
    many.requests(statuses[:300], seconds[:300])
    many.requests(statuses[300:], seconds[300:])
    many.requests(np.array([], dtype=np.int64), np.array([]))
    counted = ("shipyard_requests_total", "shipyard_request_duration_seconds_bucket",
               "shipyard_request_duration_seconds_count", "shipyard_request_duration_seconds_sum",
               "shipyard_cost_total")
    expected = {k: v for k, v in samples(one).items() if k[0] in counted}
    found = {k: v for k, v in samples(bulk).items() if k[0] in counted}
    assert found.keys() == expected.keys() and len(found) > 20
    for key, number in expected.items():
        assert found[key] == pytest.approx(number, rel=1e-12), key


@pytest.mark.parametrize("status", [0, 42, 600, 999, -200])
def test_impossible_status_codes_count_as_server_errors(
    metrics: ServiceMetrics, status: int
) -> None:
    metrics.variant(**LABELS).request(status, 0.001)
    assert value(samples(metrics), "shipyard_requests_total", code="5xx") == 1


def test_errors_by_class_timeouts_and_fallbacks(metrics: ServiceMetrics) -> None:
    v = metrics.variant(**LABELS)
    v.error("bad_input")
    v.error("bad_input")
    v.error("model_failure")
    v.error("overloaded")
    v.error("no such class")  # never raise on the hot path: it counts as internal
    v.timeout()
    v.error("timeout")
    v.fallback()
    found = samples(metrics)
    errors = {cls: value(found, "shipyard_errors_total", **{"class": cls}) for cls in ERROR_CLASSES}
    assert errors == {"bad_input": 2, "model_failure": 1, "timeout": 2, "overloaded": 1,
                      "internal": 1}
    assert value(found, "shipyard_timeouts_total") == 2  # equals errors{class=timeout}
    assert value(found, "shipyard_fallbacks_total") == 1


def test_batches_rows_and_cost_from_the_cost_model(metrics: ServiceMetrics) -> None:
    cost = CostConfig(per_request=0.002, per_cpu_second=0.5, currency="EUR")
    v = metrics.variant(**LABELS, cost=cost)
    for _ in range(10):
        v.request(200, 0.001)
    v.batch(32, 0.25)
    v.batch(1, 0.05)
    v.batch(0, 0.0)  # an empty call: nothing predicted, nothing priced
    v.batch(-3, math.nan)  # nonsense from a broken clock: ignored, never raises
    v.batch(4, math.inf)
    found = samples(metrics)
    assert value(found, "shipyard_predictions_total") == 37
    assert value(found, "shipyard_batch_size_count") == 3
    assert value(found, "shipyard_batch_size_sum") == 37
    assert value(found, "shipyard_batch_size_bucket", le="1.0") == 1
    assert value(found, "shipyard_model_cpu_seconds_total") == pytest.approx(0.3)
    # 10 requests x 0.002 + 0.3 CPU-s x 0.5
    assert value(found, "shipyard_cost_total", currency="EUR") == pytest.approx(0.17)


def test_free_deployments_report_zero_cost(metrics: ServiceMetrics) -> None:
    v = metrics.variant(**LABELS)
    v.request(200, 0.001)
    v.batch(8, 0.1)
    assert value(samples(metrics), "shipyard_cost_total", currency="USD") == 0


def test_gauges_and_violations(metrics: ServiceMetrics) -> None:
    v = metrics.variant(**LABELS)
    v.set_inflight(7)
    v.set_inflight(3)
    v.set_queue_depth(12)
    v.violation("pii")
    v.violation("pii")
    v.violation("toxicity ☢")
    found = samples(metrics)
    assert value(found, "shipyard_inflight_requests") == 3
    assert value(found, "shipyard_batch_queue_depth") == 12
    assert value(found, "shipyard_violations_total", policy="pii") == 2
    assert value(found, "shipyard_violations_total", policy="toxicity ☢") == 1


def test_policy_names_are_capped_per_variant(metrics: ServiceMetrics) -> None:
    v = metrics.variant(**LABELS)
    for i in range(100):
        v.violation(f"policy-{i}")
    found = samples(metrics)
    policies = {dict(k[1])["policy"] for k in found if k[0] == "shipyard_violations_total"}
    assert OTHER in policies
    assert len(policies) <= 33
    total = sum(v for k, v in found.items() if k[0] == "shipyard_violations_total")
    assert total == 100  # nothing lost, only folded


def test_same_labels_give_the_same_handle(metrics: ServiceMetrics) -> None:
    assert metrics.variant(**LABELS) is metrics.variant(**LABELS)
    other = metrics.variant("fraud", "challenger", "1.3.0")
    assert other is not metrics.variant(**LABELS)


def test_label_sets_past_the_cap_collapse_into_other() -> None:
    metrics = ServiceMetrics(max_label_sets=3)
    for i in range(3):
        metrics.variant("d", "v", f"1.0.{i}").request(200, 0.001)
    late = [metrics.variant("d", "v", f"2.0.{i}") for i in range(50)]
    assert all(h is late[0] for h in late)
    assert late[0].labels == {"deployment": OTHER, "variant": OTHER, "model_version": OTHER}
    for h in late:
        h.request(500, 0.1)
    found = samples(metrics)
    versions = {dict(k[1])["model_version"] for k in found if k[0] == "shipyard_requests_total"}
    assert versions == {"1.0.0", "1.0.1", "1.0.2", OTHER}
    assert found[("shipyard_requests_total", (("code", "5xx"), ("deployment", OTHER),
                                              ("model_version", OTHER), ("variant", OTHER)))] == 50
    assert found[("shipyard_metric_label_sets_collapsed_total", ())] == 50
    # a label set admitted before the cap keeps its own series
    assert metrics.variant("d", "v", "1.0.1").labels["model_version"] == "1.0.1"


def test_nasty_label_values_are_escaped_and_bounded(metrics: ServiceMetrics) -> None:
    nasty = 'a"b\\c\nd}{=,é'
    metrics.variant(nasty, "", "x" * 1000).request(200, 0.001)
    found = samples(metrics)
    (labels,) = [dict(k[1]) for k in found
                 if k[0] == "shipyard_requests_total" and dict(k[1])["code"] == "2xx"]
    assert labels["deployment"] == nasty
    assert labels["variant"] == "unknown"  # "" would mean "no label" to Prometheus
    assert labels["model_version"] == "x" * 128


def test_openmetrics_is_served_when_asked_for(metrics: ServiceMetrics) -> None:
    metrics.variant(**LABELS).request(200, 0.001)
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0,"
                                        "text/plain;version=0.0.4;q=0.5")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert value(samples(metrics, "application/openmetrics-text"), "shipyard_requests_total",
                 code="2xx") == 1
    body, content_type = metrics.render("text/html,*/*")
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"# EOF" not in body
    assert metrics.render(None)[1] == metrics.render("")[1] == content_type


def test_process_resources_are_sampled(metrics: ServiceMetrics) -> None:
    sum(i * i for i in range(200_000))  # burn a little CPU
    found = samples(metrics)
    assert found[("shipyard_process_cpu_seconds_total", ())] > 0
    assert found[("shipyard_process_resident_memory_bytes", ())] > 10 * 2**20
    assert found[("shipyard_process_threads", ())] >= 1


def test_two_service_metrics_in_one_process_do_not_share_counts() -> None:
    a, b = ServiceMetrics(), ServiceMetrics()
    a.variant(**LABELS).request(200, 0.001)
    b.variant(**LABELS)
    assert value(samples(a), "shipyard_requests_total", code="2xx") == 1
    assert value(samples(b), "shipyard_requests_total", code="2xx") == 0


def test_a_bad_cap_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_label_sets"):
        ServiceMetrics(max_label_sets=0)


def test_multiprocess_dir_without_the_library_in_that_mode_is_refused(tmp_path: Path) -> None:
    assert MULTIPROC_ENV not in os.environ
    with pytest.raises(ConfigError) as info:
        ServiceMetrics(tmp_path)
    assert MULTIPROC_ENV in str(info.value) and info.value.hint


def test_from_environ_without_the_variable_is_single_process() -> None:
    assert ServiceMetrics.from_environ({}).multiprocess_dir is None


def test_prepare_multiprocess_creates_and_empties_only_metric_files(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "metrics"
    assert prepare_multiprocess(folder) == folder.resolve()
    assert folder.is_dir()
    (folder / "counter_123.db").write_bytes(b"stale")
    (folder / "gauge_livesum_123.db").write_bytes(b"stale")
    (folder / "notes.txt").write_text("keep me")
    prepare_multiprocess(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_prepare_multiprocess_refuses_a_file(tmp_path: Path) -> None:
    file = tmp_path / "metrics"
    file.write_text("")
    with pytest.raises(ConfigError, match="Expected a folder"):
        prepare_multiprocess(file)


def test_mark_dead_removes_only_live_gauges_of_that_pid(tmp_path: Path) -> None:
    names = ["gauge_livesum_41.db", "gauge_liveall_41.db", "counter_41.db",
             "gauge_livesum_42.db", "histogram_41.db"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    mark_dead(41, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "counter_41.db", "gauge_livesum_42.db", "histogram_41.db"
    ]


def test_a_scrape_answers_even_when_the_flush_before_it_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from shipyard.monitoring.monitor import Monitor

    metrics = ServiceMetrics()
    metrics.variant(**LABELS).request(200, 0.01)
    monitor = Monitor(metrics)

    def broken(now: float, pace: object) -> None:
        raise RuntimeError("a sketch went wrong")

    monkeypatch.setattr(monitor, "_flush", broken)
    body, content_type = monitor.render_metrics(None)
    assert content_type.startswith("text/plain")
    assert ('shipyard_requests_total{code="2xx",deployment="fraud",model_version="1.2.0",'
            'variant="champion"} 1.0') in body.decode().splitlines()
    assert "monitor flush before a scrape failed" in caplog.text
