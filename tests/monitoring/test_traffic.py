"""Traffic buckets: bulk adds count like single ones, and latency histograms stay small and
within 1% of the exact quantiles."""

from __future__ import annotations

import bisect
import math

import numpy as np
import pytest

from shipyard.monitoring.traffic import (
    ACCURACY,
    GAMMA,
    NBINS,
    POINT_S,
    X_MAX_MS,
    X_MIN_MS,
    Traffic,
    TrafficBucket,
    latency_bins,
    merged_quantiles,
)

QS = (0.5, 0.95, 0.99)


def _state(traffic: Traffic) -> list[tuple[object, ...]]:
    return [(b.start, b.requests, b.errors, b.bad_input, b.timeouts, b.fallbacks,
             b.histogram[0].tolist(), b.histogram[1].tolist()) for b in traffic.buckets]


def _one_by_one(requests: list[tuple[float, int, float, bool, bool]]) -> list[tuple[object, ...]]:
    """The documented rules, request by request in plain Python: the reference that the
    vectorised `add_many` must agree with."""
    edges = [X_MIN_MS * GAMMA**i for i in range(NBINS)]
    buckets: list[list[object]] = []  # start, requests, errors, bad, timeouts, fallbacks, {bin: n}
    for now, status, latency, timeout, fallback in requests:
        start = now - now % 1.0
        if not buckets or buckets[-1][0] < start:  # type: ignore[operator]
            buckets.append([start, 0, 0, 0, 0, 0, {}])
        b = buckets[-1]
        b[1] += 1  # type: ignore[operator]
        b[2] += status >= 500  # type: ignore[operator]
        b[3] += 400 <= status < 500  # type: ignore[operator]
        b[4] += timeout  # type: ignore[operator]
        b[5] += fallback  # type: ignore[operator]
        if math.isfinite(latency):
            at = min(bisect.bisect_left(edges, latency), NBINS - 1)
            b[6][at] = b[6].get(at, 0) + 1  # type: ignore[attr-defined,index]
    return [(*b[:6], sorted(b[6]), [b[6][k] for k in sorted(b[6])])  # type: ignore[arg-type,index]
            for b in buckets]


def _random_requests(rng: np.random.Generator, n: int, t0: float) -> tuple[np.ndarray, ...]:
    # Mostly increasing times with jitter, so some requests land in an older bucket than the
    # newest ("late"), plus exact bucket boundaries.
    times = t0 + np.cumsum(rng.exponential(0.05, n)) + rng.normal(0, 0.4, n)
    times[::37] = np.floor(times[::37])
    statuses = rng.choice(np.array([200, 200, 200, 404, 503], dtype=np.int64), n)
    latencies = rng.lognormal(2.0, 1.0, n)
    latencies[::53] = np.nan
    latencies[::71] = 0.0
    return (times, statuses, latencies, rng.random(n) < 0.1, rng.random(n) < 0.05)


def test_add_many_counts_like_the_rules_one_by_one() -> None:
    rng = np.random.default_rng(7)
    bulk = Traffic()
    seen: list[tuple[float, int, float, bool, bool]] = []
    t0 = 1_700_000_000.0
    for chunk in range(5):
        times, statuses, latencies, timeouts, fallbacks = _random_requests(
            rng, 2_000, t0 + chunk * 40.0 - 10.0)  # overlapping chunks: late across calls
        seconds = np.floor(times)
        assert (seconds < np.maximum.accumulate(seconds)).any()  # late requests are in there
        seen += [(float(t), int(s), float(v), bool(to), bool(fb)) for t, s, v, to, fb
                 in zip(times, statuses, latencies, timeouts, fallbacks, strict=True)]
        bulk.add_many(times, statuses, latencies, timeouts, fallbacks)
    assert _state(bulk) == _one_by_one(seen)
    starts = [b.start for b in bulk.buckets]
    assert starts == sorted(set(starts))  # appended in time order, never back in the past
    assert sum(b.requests for b in bulk.buckets) == 10_000
    assert sum(b.errors for b in bulk.buckets) > 0 and sum(b.bad_input for b in bulk.buckets) > 0


def test_late_requests_go_to_the_newest_bucket() -> None:
    traffic = Traffic()
    traffic.add_many(np.array([10.5, 12.0, 11.9, 9.0, 12.99, 13.0]),
                     np.array([200, 503, 404, 200, 200, 200]),
                     np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                     np.array([False, True, False, False, False, False]),
                     np.array([False, False, True, False, False, True]))
    assert [(b.start, b.requests, b.errors, b.bad_input, b.timeouts, b.fallbacks)
            for b in traffic.buckets] == [(10.0, 1, 0, 0, 0, 0), (12.0, 4, 1, 1, 1, 1),
                                          (13.0, 1, 0, 0, 0, 1)]
    traffic.add(5.0, 200, 1.0)  # late across calls too
    assert traffic.buckets[-1].requests == 2 and len(traffic.buckets) == 3


def test_add_many_of_nothing_is_a_no_op() -> None:
    traffic = Traffic()
    empty = np.zeros(0)
    traffic.add_many(empty, empty.astype(np.int64), empty, empty.astype(bool),
                     empty.astype(bool))
    assert not traffic.buckets


def test_add_many_keeps_only_the_newest_buckets() -> None:
    traffic = Traffic(keep=5)
    times = np.arange(10, dtype=np.float64)
    traffic.add_many(times, np.full(10, 200), times + 1, np.zeros(10, bool), np.zeros(10, bool))
    assert [b.start for b in traffic.buckets] == [5.0, 6.0, 7.0, 8.0, 9.0]


@pytest.mark.parametrize("sigma", [0.5, 1.5])
def test_quantiles_are_within_one_percent(sigma: float) -> None:
    rng = np.random.default_rng(3)
    latencies = rng.lognormal(3.0, sigma, 100_000)
    traffic = Traffic()
    times = 1000.0 + np.sort(rng.uniform(0, 60, latencies.size))
    traffic.add_many(times, np.full(latencies.size, 200), latencies,
                     np.zeros(latencies.size, bool), np.zeros(latencies.size, bool))
    found = merged_quantiles(traffic.window(1060.0, 60.0), QS)
    assert found is not None
    for method in ("nearest", "linear"):
        exact = np.percentile(latencies, [q * 100 for q in QS], method=method)
        assert np.all(np.abs(np.asarray(found) / exact - 1) <= ACCURACY + 1e-9)
    figures = traffic.figures(1060.0, 60.0)
    for q, value in zip(QS, found, strict=True):
        assert figures[f"latency_p{round(q * 100)}_ms"] == round(value, 3)


def test_every_latency_comes_back_within_one_percent() -> None:
    values = np.geomspace(X_MIN_MS * 1.0001, X_MAX_MS, 5_000)
    for value in values:
        bucket = TrafficBucket(0.0)
        bins, counts = np.unique(latency_bins(np.array([value])), return_counts=True)
        bucket.add_latencies(bins, counts)
        (found,) = merged_quantiles([bucket], [0.5]) or [math.nan]
        assert abs(found / value - 1) <= ACCURACY + 1e-9


def test_odd_latencies_are_binned_as_documented() -> None:
    traffic = Traffic()
    latencies = np.array([0.0, -5.0, math.nan, math.inf, -math.inf, 1e12, 10.0])
    n = latencies.size
    traffic.add_many(np.full(n, 100.2), np.full(n, 200), latencies, np.zeros(n, bool),
                     np.zeros(n, bool))
    (bucket,) = traffic.buckets
    assert bucket.requests == 7  # every request counts ...
    assert bucket.histogram[1].sum() == 4  # ... but only finite latencies are binned
    assert bucket.histogram[0][0] == 0 and bucket.histogram[1][0] == 2  # 0 and -5
    assert bucket.histogram[0][-1] == NBINS - 1  # 1e12 clipped to the top bin
    assert _state(traffic) == _one_by_one([(100.2, 200, float(v), False, False)
                                           for v in latencies])
    low, high = merged_quantiles([bucket], (0.0, 1.0)) or []
    assert low == pytest.approx(X_MIN_MS, rel=ACCURACY)
    assert high == pytest.approx(X_MAX_MS, rel=2 * ACCURACY)
    # Only NaN latencies: requests, but no quantiles.
    only_nan = Traffic()
    only_nan.add(100.0, 200, math.nan)
    assert merged_quantiles(only_nan.window(101.0, 10.0), QS) is None
    figures = only_nan.figures(101.0, 10.0)
    assert figures["requests"] == 1.0 and figures["latency_p99_ms"] is None
    assert only_nan.series(101.0, 10.0)[0]["p99_ms"] is None


def test_a_busy_bucket_stays_small() -> None:
    rng = np.random.default_rng(11)
    traffic = Traffic()
    n = 200_000
    for part in np.array_split(rng.lognormal(2.0, 2.0, n), 20):  # merged over 20 flushes
        traffic.add_many(np.full(part.size, 500.5), np.full(part.size, 200), part,
                         np.zeros(part.size, bool), np.zeros(part.size, bool))
    (bucket,) = traffic.buckets
    assert bucket.requests == n and int(bucket.histogram[1].sum()) == n
    assert bucket.histogram[0].size == bucket.histogram[1].size <= NBINS < 2_000
    assert bucket.histogram[0].dtype == np.uint16 and bucket.histogram[1].dtype == np.int64
    assert np.all(np.diff(bucket.histogram[0].astype(np.int64)) > 0)  # sorted, unique


def test_window_is_strict_and_a_zero_length_window_is_empty() -> None:
    traffic = Traffic()
    for t in (100.0, 101.0, 102.0):
        traffic.add(t, 200, 1.0)
    assert [b.start for b in traffic.window(102.5, 1.5)] == [101.0, 102.0]
    assert [b.start for b in traffic.window(102.0, 1.0)] == [101.0, 102.0]  # start >= now - s
    assert list(traffic.window(102.5, 0.0)) == []
    assert merged_quantiles(traffic.window(102.5, 0.0), QS) is None


def test_figures_of_an_empty_window() -> None:
    figures = Traffic().figures(100.0, 60.0)
    assert figures == {
        "requests": 0.0, "request_rate": 0.0, "error_rate": None, "bad_input_rate": None,
        "timeout_rate": None, "fallback_rate": None, "latency_p50_ms": None,
        "latency_p95_ms": None, "latency_p99_ms": None,
    }
    assert Traffic().figures(100.0, 0.0)["request_rate"] is None


def test_figures_rates() -> None:
    traffic = Traffic()
    statuses = np.array([200, 200, 404, 503, 500, 200, 200, 200, 200, 200])
    traffic.add_many(np.full(10, 50.0), statuses, np.full(10, 5.0),
                     np.arange(10) < 1, np.arange(10) < 3)
    figures = traffic.figures(51.0, 10.0)
    assert figures["requests"] == 10.0 and figures["request_rate"] == 1.0
    assert figures["error_rate"] == 0.2 and figures["bad_input_rate"] == 0.1
    assert figures["timeout_rate"] == 0.1 and figures["fallback_rate"] == 0.3
    assert figures["latency_p50_ms"] == pytest.approx(5.0, rel=ACCURACY)


def test_series_aggregates_into_points() -> None:
    traffic = Traffic()
    times = np.arange(1000.0, 1030.0, 0.5)  # 60 requests over 30 one-second buckets
    latencies = np.where(times < 1010.0, 2.0, 50.0)
    statuses = np.where(times % 3 == 0, 503, 200)
    traffic.add_many(times, statuses, latencies, np.zeros(times.size, bool),
                     np.zeros(times.size, bool))
    points = traffic.series(1030.0, 3600.0)
    assert [p["t"] for p in points] == [1000.0, 1000.0 + POINT_S, 1000.0 + 2 * POINT_S]
    assert [p["requests"] for p in points] == [20, 20, 20]
    assert sum(int(p["errors"] or 0) for p in points) == int((statuses >= 500).sum())
    assert set(points[0]) == {"t", "requests", "errors", "bad_input", "timeouts", "fallbacks",
                              "p50_ms", "p99_ms"}
    assert points[0]["p50_ms"] == pytest.approx(2.0, rel=ACCURACY)
    assert points[1]["p99_ms"] == pytest.approx(50.0, rel=ACCURACY)
    assert points[0]["p99_ms"] == round(float(points[0]["p99_ms"] or 0), 3)
    assert traffic.buckets[0].point()["p50_ms"] == pytest.approx(2.0, rel=ACCURACY)


def test_quantile_levels_must_be_in_range() -> None:
    traffic = Traffic()
    traffic.add(1.0, 200, 1.0)
    with pytest.raises(ValueError):
        merged_quantiles(traffic.window(2.0, 10.0), [1.5])
