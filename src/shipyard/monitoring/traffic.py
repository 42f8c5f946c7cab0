"""Service health over time: requests, errors, timeouts, fallbacks and latency per time bucket.

Prometheus holds the counters for scraping; this keeps the recent past in the server itself,
so alert rules, the rollout controller, `shipyard monitor` and `/ui` can read rates and
latency quantiles without a Prometheus server. Buckets are one second long, so a rollout
step's window starts within a second of the step; `KEEP` of them (one hour) are kept, and
plots get them `POINT_S` at a time. Everything here runs on the monitor's flusher thread,
never per request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

BUCKET_S = 1.0
KEEP = 3600
POINT_S = 10.0


@dataclass
class TrafficBucket:
    start: float
    requests: int = 0
    errors: int = 0
    bad_input: int = 0
    timeouts: int = 0
    fallbacks: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def point(self) -> dict[str, float | int | None]:
        p50, p99 = _quantiles(self.latencies_ms)
        return {
            "t": self.start,
            "requests": self.requests,
            "errors": self.errors,
            "bad_input": self.bad_input,
            "timeouts": self.timeouts,
            "fallbacks": self.fallbacks,
            "p50_ms": p50,
            "p99_ms": p99,
        }


def _quantiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    p50, p99 = np.percentile(np.asarray(values), [50, 99])
    return round(float(p50), 3), round(float(p99), 3)


class Traffic:
    """The recent traffic of one variant (one model version of one deployment)."""

    def __init__(self, bucket_s: float = BUCKET_S, keep: int = KEEP) -> None:
        self.bucket_s = bucket_s
        self.buckets: deque[TrafficBucket] = deque(maxlen=keep)

    def _bucket(self, now: float) -> TrafficBucket:
        start = now - now % self.bucket_s
        if not self.buckets or self.buckets[-1].start < start:
            self.buckets.append(TrafficBucket(start))
        return self.buckets[-1]

    def add(self, now: float, status: int, latency_ms: float, *, timeout: bool = False,
            fallback: bool = False) -> None:
        bucket = self._bucket(now)
        bucket.requests += 1
        if status >= 500:
            bucket.errors += 1
        elif status >= 400:
            bucket.bad_input += 1
        bucket.timeouts += timeout
        bucket.fallbacks += fallback
        bucket.latencies_ms.append(latency_ms)

    def window(self, now: float, seconds: float) -> Iterable[TrafficBucket]:
        """The buckets that began in the last `seconds` (none for a zero-length window: a
        rollout step's first look must not count traffic from before the step)."""
        return [b for b in self.buckets if b.start >= now - seconds]

    def figures(self, now: float, seconds: float) -> dict[str, float | None]:
        """Rates and latency quantiles over the last `seconds` (None where nothing was seen).

        `error_rate` counts server-side failures (5xx, after fallbacks); a caller's bad input
        (4xx) is its own figure, `bad_input_rate`, and never makes a model look broken.
        """
        buckets = list(self.window(now, seconds))
        requests = sum(b.requests for b in buckets)
        latencies = [v for b in buckets for v in b.latencies_ms]
        p50, p99 = _quantiles(latencies)
        p95 = round(float(np.percentile(latencies, 95)), 3) if latencies else None

        def rate(count: int) -> float | None:
            return count / requests if requests else None

        return {
            "requests": float(requests),
            "request_rate": requests / seconds if seconds > 0 else None,
            "error_rate": rate(sum(b.errors for b in buckets)),
            "bad_input_rate": rate(sum(b.bad_input for b in buckets)),
            "timeout_rate": rate(sum(b.timeouts for b in buckets)),
            "fallback_rate": rate(sum(b.fallbacks for b in buckets)),
            "latency_p50_ms": p50,
            "latency_p95_ms": p95,
            "latency_p99_ms": p99,
        }

    def series(self, now: float, seconds: float) -> list[dict[str, float | int | None]]:
        """One point per POINT_S: what a plot of the last `seconds` needs."""
        points: dict[float, TrafficBucket] = {}
        for bucket in self.window(now, seconds):
            start = bucket.start - bucket.start % POINT_S
            point = points.setdefault(start, TrafficBucket(start))
            point.requests += bucket.requests
            point.errors += bucket.errors
            point.bad_input += bucket.bad_input
            point.timeouts += bucket.timeouts
            point.fallbacks += bucket.fallbacks
            point.latencies_ms.extend(bucket.latencies_ms)
        return [points[start].point() for start in sorted(points)]
