"""Service health over time: requests, errors, timeouts, fallbacks and latency per time bucket.

Prometheus holds the counters for scraping; this keeps the recent past in the server itself,
so alert rules, the rollout controller, `shipyard monitor` and `/ui` can read rates and
latency quantiles without a Prometheus server. Buckets are one second long, so a rollout
step's window starts within a second of the step; `KEEP` of them (one hour) are kept, and
plots get them `POINT_S` at a time. Everything here runs on the monitor's flusher thread,
never per request: `add_many` takes everything since the last flush in a few numpy calls.

Latencies are not kept one by one (at 9,000 requests/s an hour of them is ~32M floats) but as
a log-bucketed histogram per bucket, DDSketch-style: bin i holds latencies in
(X_MIN_MS * GAMMA**(i-1), X_MIN_MS * GAMMA**i] with GAMMA = (1 + a) / (1 - a), a = 1%, and
reports the value 2 * X_MIN_MS * GAMMA**i / (GAMMA + 1), which is within 1% (relative) of
every latency in the bin. So every quantile is within 1% of the exact one, a bucket holds at
most `NBINS` (~1,150) bin counts however busy it is, and windows merge by adding counts.
The quantile at q is the value of rank round(q * (n - 1)) (0-based, ties to even), like
numpy's `method="nearest"`. Latencies <= X_MIN_MS (0 and negatives included) count in the
lowest bin (reported as ~0.001 ms), latencies beyond the top bin (>= X_MAX_MS) in it; NaN
and infinite latencies (a request that has none) count as requests but not in the histogram.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

BUCKET_S = 1.0
KEEP = 3600
POINT_S = 10.0

ACCURACY = 0.01  # relative error of every reported latency quantile
GAMMA = (1 + ACCURACY) / (1 - ACCURACY)
X_MIN_MS = 0.001
X_MAX_MS = 1e7  # ~2.8 hours: anything slower has long timed out
# Bin NBINS - 1 ends at or above X_MAX_MS; ~1,150 bins, so bin numbers fit uint16.
NBINS = math.ceil(math.log(X_MAX_MS / X_MIN_MS) / math.log(GAMMA)) + 1
# Bin i holds the latencies in (_UPPER[i - 1], _UPPER[i]]; bins are found by comparing with
# these edges (searchsorted), not by taking logs, so a value on an edge always lands alike.
_UPPER = X_MIN_MS * GAMMA ** np.arange(NBINS, dtype=np.float64)
# The value each bin answers: the point within ACCURACY of both of its ends.
_VALUES = 2 * _UPPER / (GAMMA + 1)

Histogram = tuple[np.ndarray, np.ndarray]  # sorted unique bins (uint16), their counts (int64)


def _empty() -> Histogram:
    return np.zeros(0, dtype=np.uint16), np.zeros(0, dtype=np.int64)


def latency_bins(latencies_ms: np.ndarray) -> np.ndarray:
    """The histogram bin of each finite latency (NaN and infinities are left out)."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    values = values[np.isfinite(values)]
    bins = np.minimum(np.searchsorted(_UPPER, values, side="left"), NBINS - 1)
    return bins.astype(np.uint16)


def _merge(histogram: Histogram, bins: np.ndarray, counts: np.ndarray) -> Histogram:
    """`histogram` plus more counts (`bins` sorted and unique), as a new histogram."""
    if not histogram[0].size:
        return bins.astype(np.uint16, copy=False), counts.astype(np.int64, copy=False)
    merged, at = np.unique(np.concatenate([histogram[0], bins.astype(np.uint16, copy=False)]),
                           return_inverse=True)
    summed = np.zeros(merged.size, dtype=np.int64)
    np.add.at(summed, at, np.concatenate([histogram[1], counts.astype(np.int64, copy=False)]))
    return merged, summed


@dataclass(eq=False)  # eq=False: numpy arrays have no truth value to compare dataclasses by
class TrafficBucket:
    start: float
    requests: int = 0
    errors: int = 0
    bad_input: int = 0
    timeouts: int = 0
    fallbacks: int = 0
    # The latency histogram, sparse: (sorted unique bins, their counts). One tuple, replaced
    # whole, so a reader on another thread never pairs new bins with old counts.
    histogram: Histogram = field(default_factory=_empty, repr=False)

    def add_latencies(self, bins: np.ndarray, counts: np.ndarray) -> None:
        """Count more latencies, given as sorted unique bin numbers and their counts (the
        flusher's thread only)."""
        if bins.size:
            self.histogram = _merge(self.histogram, bins, counts)

    def point(self) -> dict[str, float | int | None]:
        p50, p99 = _rounded(merged_quantiles([self], (0.5, 0.99)), 2)
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


def merged_quantiles(buckets: Iterable[TrafficBucket], qs: Sequence[float]) -> list[float] | None:
    """Latency quantiles (ms, within 1%) over all of `buckets` together; None when they saw
    no latency. Rank round(q * (n - 1)), ties to even, as numpy's method="nearest"."""
    levels = np.asarray(qs, dtype=np.float64)
    if levels.size and not ((levels >= 0) & (levels <= 1)).all():
        raise ValueError("quantiles must lie in [0, 1]")
    kept = [b.histogram for b in buckets if b.histogram[0].size]
    if not kept:
        return None
    dense = np.bincount(np.concatenate([h[0] for h in kept]),
                        weights=np.concatenate([h[1] for h in kept]), minlength=NBINS)
    # Counts as float64 stay exact up to 2**53 latencies, far beyond an hour of traffic.
    cumulative = np.cumsum(dense)
    n = cumulative[-1]
    ranks = np.rint(levels * (n - 1))
    # The bin holding 0-based rank k is the first whose cumulative count exceeds k.
    at = np.minimum(np.searchsorted(cumulative, ranks, side="right"), NBINS - 1)
    return [float(v) for v in _VALUES[at]]


def _rounded(values: list[float] | None, size: int) -> list[float | None]:
    if values is None:
        return [None] * size
    return [round(v, 3) for v in values]


class Traffic:
    """The recent traffic of one variant (one model version of one deployment)."""

    def __init__(self, bucket_s: float = BUCKET_S, keep: int = KEEP) -> None:
        self.bucket_s = bucket_s
        self.buckets: deque[TrafficBucket] = deque(maxlen=keep)

    def add(self, now: float, status: int, latency_ms: float, *, timeout: bool = False,
            fallback: bool = False) -> None:
        """One request (the monitor's flusher uses `add_many` for everything it gathered)."""
        self.add_many(np.array([now]), np.array([status]), np.array([latency_ms]),
                      np.array([timeout]), np.array([fallback]))

    def add_many(self, times: np.ndarray, statuses: np.ndarray, latencies_ms: np.ndarray,
                 timeouts: np.ndarray, fallbacks: np.ndarray) -> None:
        """Requests in the order they were seen, counted as if one by one: a request whose
        bucket does not begin after the newest bucket's start goes into the newest bucket
        (buckets are only ever appended, in time order)."""
        times = np.asarray(times, dtype=np.float64)
        if not times.size:
            return
        statuses = np.asarray(statuses, dtype=np.int64)
        latencies = np.asarray(latencies_ms, dtype=np.float64)
        timeouts = np.asarray(timeouts, dtype=bool)
        fallbacks = np.asarray(fallbacks, dtype=bool)
        if not (statuses.size == latencies.size == timeouts.size == fallbacks.size
                == times.size):
            raise ValueError("add_many needs arrays of one length")
        newest = self.buckets[-1].start if self.buckets else -math.inf
        # np.remainder takes the divisor's sign like Python's %, so starts match `add`'s.
        starts = times - np.remainder(times, self.bucket_s)
        # Each request's bucket is the newest start seen so far: a running maximum.
        homes = np.maximum.accumulate(np.concatenate([[newest], starts]))[1:]
        # `homes` never decreases, so each bucket's requests are one contiguous run.
        firsts = np.concatenate([[0], np.flatnonzero(homes[1:] != homes[:-1]) + 1])
        requests = np.diff(np.append(firsts, times.size))
        errors = np.add.reduceat((statuses >= 500).astype(np.int64), firsts)
        bad_input = np.add.reduceat(((statuses >= 400) & (statuses < 500)).astype(np.int64),
                                    firsts)
        timed_out = np.add.reduceat(timeouts.astype(np.int64), firsts)
        fell_back = np.add.reduceat(fallbacks.astype(np.int64), firsts)
        # One np.unique over (run, bin) pairs counts every run's latencies at once.
        runs = np.repeat(np.arange(firsts.size, dtype=np.int64), requests)
        finite = np.isfinite(latencies)
        keys, counts = np.unique(runs[finite] * NBINS + latency_bins(latencies[finite]),
                                 return_counts=True)
        run_of_key = keys // NBINS
        edges = np.searchsorted(run_of_key, np.arange(firsts.size + 1))
        for run, first in enumerate(firsts):
            home = float(homes[first])
            if not self.buckets or self.buckets[-1].start < home:
                self.buckets.append(TrafficBucket(home))
            bucket = self.buckets[-1]
            bucket.requests += int(requests[run])
            bucket.errors += int(errors[run])
            bucket.bad_input += int(bad_input[run])
            bucket.timeouts += int(timed_out[run])
            bucket.fallbacks += int(fell_back[run])
            lo, hi = edges[run], edges[run + 1]
            bucket.add_latencies((keys[lo:hi] % NBINS).astype(np.uint16),
                                 counts[lo:hi].astype(np.int64))

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
        p50, p95, p99 = _rounded(merged_quantiles(buckets, (0.5, 0.95, 0.99)), 3)

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
        groups: dict[float, list[TrafficBucket]] = {}
        for bucket in self.window(now, seconds):
            groups.setdefault(bucket.start - bucket.start % POINT_S, []).append(bucket)
        points = []
        for start in sorted(groups):
            members = groups[start]
            point = TrafficBucket(
                start,
                requests=sum(b.requests for b in members),
                errors=sum(b.errors for b in members),
                bad_input=sum(b.bad_input for b in members),
                timeouts=sum(b.timeouts for b in members),
                fallbacks=sum(b.fallbacks for b in members),
            ).point()
            # The histograms merge where the quantiles are taken, not into the point.
            point["p50_ms"], point["p99_ms"] = _rounded(merged_quantiles(members, (0.5, 0.99)), 2)
            points.append(point)
        return points
