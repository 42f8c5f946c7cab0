"""The server's monitor: nothing on the event loop, a cheap hook per request, and a flusher
thread that does the rest.

Per request `Monitor.finished` appends one tuple to a deque (and bumps a pre-bound Prometheus
child for an error, timeout or fallback): time, request id, status, latency and the request's
context, or None in its place. The server calls it in bulk from its access log's thread, which
already takes every finished request off the event loop. The context, with the request's
inputs and outputs, is kept only where the flush will use it: every one while prediction
records are on, every error, timeout or fallback, and otherwise about the share the sketches
take (`SKETCH_PER_FLUSH` a second per variant). The server draws that share on its event loop
as each request is answered (`KeepShare`), and hands over only the variant's key for the
rest, so that their inputs and outputs are freed there at once, not a second later on another
thread (measured with bench/monitoring/shared_core.py: off / monitoring 0.910 -> 0.920).
Everything else about a request is read from its context by the flusher, in bulk: on the
event loop each step runs with cold caches, several times slower than the same step in a loop
(in the server, 9-13 us a request for a `finish` there that built a record, 7-9 us for the
tuple alone, 2 us in a loop).

Once a second the flusher thread takes everything gathered since and, vectorised over all of
it, updates the request counters and latency histogram, the traffic buckets, the sketches of
inputs, predictions and confidence, the prediction records, batch sizes and cost, resource
gauges (a scrape of /metrics flushes first, so it is never behind); every `slide_s` it
computes drift, and every few seconds it evaluates the alert rules.
Figures are kept per variant, i.e. per deployment, variant and model version, across
revisions: a version served before and after a redeploy keeps its history.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from shipyard.bundle.manifest import Schema
from shipyard.bundle.schema import concat
from shipyard.cpu import Pacer, name_thread
from shipyard.errors import NotFoundError, ShipyardError, UserError
from shipyard.monitoring.alerts import AlertEvaluator
from shipyard.monitoring.drift import DriftReport, drift_report
from shipyard.monitoring.feedback import Feedback, ImportReport, import_feedback, submit_feedback
from shipyard.monitoring.metrics import ServiceMetrics, VariantMetrics
from shipyard.monitoring.performance import cell_figures, performance
from shipyard.monitoring.records import Answered, RecordWriter, raw_rows
from shipyard.monitoring.recordstore import RecordStore
from shipyard.monitoring.sketch import ReferenceBins, WindowSketch, merge_all, sketch_columns
from shipyard.monitoring.traffic import Traffic
from shipyard.routing import MonitoringConfig
from shipyard.runtimes.model import Model
from shipyard.security.pii import redact_text, redact_value
from shipyard.security.secrets import Secret, resolve

log = logging.getLogger("shipyard.monitoring")

Key = tuple[str, str, str]  # deployment, variant, model version
WILDCARD = ".*"
FEEDBACK_FIELDS = frozenset({"request_id", "label", "thumbs", "score", "comment"})
PERF_EVERY_S = 10.0
FLUSH_S = 1.0
# Requests sketched per variant per flush, at most: 500 a second is 150,000 rows in a 5-minute
# window, plenty for drift. Requests kept for the flush hold their batch and outputs a second,
# memory the allocator cannot reuse while hot: keeping 2,000 a second, monitoring cost the
# event loop +10 us a request at c=64; keeping 100, +1.7.
SKETCH_PER_FLUSH = 500
KEEP_MARGIN = 1.25
ALERT_EVERY_S = 5.0
ALERT_WINDOW_S = 300.0
KEEP_DRIFT = 288  # drift evaluations kept for the history plot


# What `finished` appends per request: (time, request id, status, latency in seconds, context
# or None when the request is only counted).
Observed = tuple[float, str, int, float, "Mapping[str, Any] | None"]
# What the server hands over per request: its context, or its variant's key when only counted.
Handed = Mapping[str, Any] | Key


MAX_CLASSES = 50  # confusion matrices keep at most this many classes; the rest are "other"
KEEP_DIFFS = 20_000


@dataclass
class PairedStats:
    """A shadow's answers beside the answers the callers got, on the same requests."""

    primary: tuple[str, str]  # (variant, version) that answered the caller
    shadow: tuple[str, str]
    n: int = 0
    agree: int = 0
    errors: int = 0
    kind: str | None = None  # "classes" or "values"
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    diffs: deque[float] = field(default_factory=lambda: deque(maxlen=KEEP_DIFFS))

    def add(self, primary: Mapping[str, Any], shadow: Mapping[str, Any]) -> None:
        name = next((k for k in primary if k != "probabilities"), None)
        if name is None or name not in shadow:
            return
        a = np.asarray(primary[name]).ravel()
        b = np.asarray(shadow[name]).ravel()
        if a.shape != b.shape:
            self.errors += 1
            return
        classes = a.dtype.kind in "iubOSU" or "probabilities" in primary
        self.kind = "classes" if classes else "values"
        self.n += len(a)
        if classes:
            self.agree += int(np.sum(a == b))
            for x, y in zip(a.tolist(), b.tolist(), strict=True):
                row = self.confusion.setdefault(_cls(x, self.confusion), {})
                col = _cls(y, row)
                row[col] = row.get(col, 0) + 1
        else:
            diff = b.astype(np.float64) - a.astype(np.float64)
            self.agree += int(np.sum(np.abs(diff) <= 1e-9 + 1e-6 * np.abs(a.astype(float))))
            self.diffs.extend(diff[np.isfinite(diff)].tolist())

    def to_json(self) -> dict[str, Any]:
        diffs = np.asarray(self.diffs, dtype=np.float64)
        summary = None
        if self.kind == "values" and diffs.size:
            p50, p99 = np.percentile(np.abs(diffs), [50, 99])
            summary = {"mean": float(diffs.mean()), "std": float(diffs.std()),
                       "p50_abs": float(p50), "p99_abs": float(p99)}
        return {
            "primary": {"variant": self.primary[0], "version": self.primary[1]},
            "shadow": {"variant": self.shadow[0], "version": self.shadow[1]},
            "n": self.n, "agree": self.agree,
            "agreement": self.agree / self.n if self.n else None,
            "errors": self.errors, "kind": self.kind,
            "confusion": self.confusion if self.kind == "classes" else None,
            "diffs": summary,
        }


def _cls(value: Any, seen: Mapping[str, Any]) -> str:
    text = str(value)[:64]
    return text if text in seen or len(seen) < MAX_CLASSES else "other"


def give_way_never() -> None:
    """The pace of a flush on a caller's thread: it runs straight through."""


class BatchStats(Protocol):
    batches: int
    cpu_s: float
    sizes: deque[int]


@dataclass(slots=True)
class KeepShare:
    """The share of a variant's answered requests whose inputs and outputs go to the monitor;
    the rest are only counted. The monitor sets it; the server draws from it on its event loop
    as each request is answered, so that a request not kept frees its values there and then."""

    value: float = 1.0

    def draw(self) -> bool:
        """Whether to keep this one."""
        share = self.value
        return share >= 1.0 or (share > 0.0 and _draw() < share)


# Which requests' values are kept: a sample for sketches, guarding nothing.
_draw = random.Random().random  # noqa: S311


@dataclass
class Served:
    """What the server hands over for each variant of a revision it is about to serve."""

    role: str
    model: Model
    stats: BatchStats | None = None
    queue_depth: Callable[[], int] | None = None
    keep: KeepShare = field(default_factory=KeepShare)


@dataclass
class VariantMonitor:
    """Everything measured for one model version in one deployment."""

    key: Key
    model: Model
    config: MonitoringConfig
    metrics: VariantMetrics
    role: str = "champion"
    served: Served | None = None
    inflight: Callable[[], int] | None = None
    seen: deque[Observed] = field(default_factory=deque)
    traffic: Traffic = field(default_factory=Traffic)
    reference: ReferenceBins | None = None
    buckets: deque[tuple[float, WindowSketch]] = field(default_factory=deque)
    drift: DriftReport | None = None
    drift_history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEEP_DRIFT))
    last_drift: float = 0.0
    # The share of requests whose context is kept for the flush: 1 while records are on,
    # otherwise about what the flush will sketch (SKETCH_PER_FLUSH), so that under load the
    # rest are freed at once, not held a second. Set under the monitor's lock, by `attach`
    # and after each flush, so that a flush racing an attach that turns records on cannot
    # lower it; shared with the server, which draws from it (`KeepShare`).
    keep: KeepShare = field(default_factory=KeepShare)
    _batches_seen: int = 0
    _cpu_seen: float = 0.0
    _text_inputs: bool = True

    def __post_init__(self) -> None:
        profile = self.model.manifest.profile
        self.reference = ReferenceBins.from_profile(profile) if profile is not None else None
        # Inputs validated against a schema without text fields hold no text to scrub (a model
        # without an input schema gets whatever callers send, so it is always scrubbed).
        inputs = self.model.schema.inputs
        self._text_inputs = not inputs or any(f.dtype in TEXT_DTYPES for f in inputs)

    @property
    def bucket_s(self) -> float:
        # Sixty buckets per window: windows slide in 1/60 steps, and memory stays bounded.
        return max(1.0, self.config.drift.window_s / 60)

    def _sketch_for(self, now: float) -> WindowSketch | None:
        if self.reference is None:
            return None
        start = now - now % self.bucket_s
        if not self.buckets or self.buckets[-1][0] < start:
            self.buckets.append((start, WindowSketch(self.reference)))
            horizon = now - self.config.drift.window_s - self.bucket_s
            while self.buckets and self.buckets[0][0] < horizon:
                self.buckets.popleft()
        return self.buckets[-1][1]

    def window(self, now: float, seconds: float | None = None, *,
               quantiles: bool = True) -> WindowSketch | None:
        """The merged sketch of the last `seconds` (default: the drift window); without
        `quantiles`, counts only (merging the KLL sketches is most of a merge's cost)."""
        if self.reference is None:
            return None
        seconds = self.config.drift.window_s if seconds is None else seconds
        parts = [sketch for start, sketch in self.buckets if start > now - seconds - self.bucket_s]
        return merge_all([WindowSketch(self.reference, quantiles=False), *parts],
                         start=now - seconds, end=now, quantiles=quantiles)

    def _batches(self) -> None:
        """Batch sizes and model CPU time since the last flush, from the batcher's stats."""
        stats = self.served.stats if self.served is not None else None
        if stats is not None:
            new = stats.batches - self._batches_seen
            cpu = stats.cpu_s - self._cpu_seen
            self._batches_seen, self._cpu_seen = stats.batches, stats.cpu_s
            sizes = list(stats.sizes)[-new:] if new > 0 else []
            for rows in sizes:
                self.metrics.batch(rows, cpu / len(sizes))
        if self.served is not None and self.served.queue_depth is not None:
            self.metrics.set_queue_depth(self.served.queue_depth())
        if self.inflight is not None:
            self.metrics.set_inflight(self.inflight())

    def flush(self, now: float, records: RecordWriter | None,
              pace: Callable[[], None] = give_way_never) -> int:
        """Count, sketch and record what `finish` left since the last flush; returns how
        many requests that was."""
        self._batches()
        taken = [self.seen.popleft() for _ in range(len(self.seen))]
        if not taken:
            return 0
        count = len(taken)
        times, ids, statuses, seconds, contexts = zip(*taken, strict=True)
        statuses_ = np.array(statuses, dtype=np.int64)
        latencies = np.array(seconds, dtype=np.float64) * 1000.0
        # Counted here, not per request: one update per status class and latency bucket.
        self.metrics.requests(statuses_, latencies / 1000.0)
        # Timeouts and fallbacks always keep their context: their flags are all there.
        kept = [c for c in contexts if c is not None]
        timeouts, fallbacks = np.zeros(count, np.bool_), np.zeros(count, np.bool_)
        if any("timeout" in c for c in kept):
            for i, c in enumerate(contexts):
                if c is not None and "timeout" in c:
                    timeouts[i], fallbacks[i] = bool(c["timeout"]), bool(c.get("fallback"))
        at = np.array(times, dtype=np.float64)
        self.traffic.add_many(at, statuses_, latencies, timeouts, fallbacks)
        pace()
        # Sketched: what this version answered itself (not its fallback).
        answered = [c for c in kept if c.get("outputs") is not None and "answered_by" not in c]
        if len(answered) > SKETCH_PER_FLUSH:
            # Under heavy load a uniform sample describes the distribution as well; drift's
            # noise bounds use the rows actually sketched, so they stay honest.
            answered = random.sample(answered, SKETCH_PER_FLUSH)
        sketch = self._sketch_for(now)
        if sketch is not None and answered:
            try:
                # One vectorised update over everything since the last flush: per-request
                # updates would cost a hundred times more.
                served = [c["outputs"] for c in answered]
                outputs = {
                    name: np.concatenate([np.asarray(o[name]) for o in served])
                    for name in served[0]
                }
                sketch.update(
                    sketch_columns(self.model.schema, concat([c["batch"] for c in answered]),
                                   outputs)
                )
            except Exception:
                log.exception("could not sketch a batch of %s", self.key)
            pace()
        if records is not None and kept:
            # One hand-off for them all, as columns: the writer makes each record on its own
            # thread, a chunk at a time from slices of these.
            deployment, variant, version = self.key
            where = [i for i, c in enumerate(contexts) if c is not None]
            records.submit_answered(Answered(
                deployment, variant, self.model.name, version, [ids[i] for i in where],
                at[where], latencies[where],
                [c.get("batch") for c in kept], [c.get("outputs") for c in kept],
                [c.get("answered_by") for c in kept], scrubbed, self._text_inputs,
            ))
        return count

    def share_to_keep(self, count: int | None) -> float:
        """The share of requests `finish` should keep, after a flush of `count` (None: no
        flush yet, or none since)."""
        if self.config.records.sample > 0:
            return 1.0  # every request may be recorded
        if self.reference is None:
            return 0.0  # nothing to sketch against
        if count is None:
            return self.keep.value
        # A margin over the sketch's share, so that a flush still finds its fill to sample.
        return min(1.0, KEEP_MARGIN * SKETCH_PER_FLUSH / max(1, count))

    def report(self, now: float, window_s: float | None = None, *,
               quantiles: bool = True) -> DriftReport | None:
        window = self.window(now, window_s, quantiles=quantiles)
        if window is None or self.reference is None:
            return None
        return drift_report(self.reference, window, self.config.drift)

    def evaluate_drift(self, now: float) -> DriftReport | None:
        # For alerts, the controller and the history: judged on counts; the live quantiles a
        # person reads come with the reports the API makes on request.
        self.drift = self.report(now, quantiles=False)
        self.last_drift = now
        if self.drift is None:
            return None
        self.drift_history.append({
            "t": now,
            "status": self.drift.status,
            "fields": {
                key: {"psi": item["psi"], "drifted": item["drifted"]}
                for key, item in compact(self.drift).items()
            },
        })
        return self.drift

    def figures(self, now: float) -> dict[str, float | None]:
        """Every figure an alert rule or the rollout controller may name."""
        figures = self.traffic.figures(now, ALERT_WINDOW_S)
        if self.drift is not None and self.drift.status != "insufficient_data":
            fields = compact(self.drift)
            for role in ("input", "output"):
                figures[f"drift.{role}s"] = float(
                    sum(1 for f in fields.values() if f["drifted"] and f["role"] == role)
                )
            for key, item in fields.items():
                for stat in STATISTICS:
                    if item.get(stat) is not None:
                        figures[f"drift.{stat}.{key}"] = item[stat]
                # 1 when the key drifted: rule "drift.input.*" alerts per drifted input.
                figures[f"drift.{item['role']}.{key}"] = 1.0 if item["drifted"] else 0.0
        return figures


STATISTICS = ("psi", "js", "ks", "cramers_v")
TEXT_DTYPES = frozenset({"string", "category"})


def scrubbed(value: Any) -> Any:
    """`value` with PII and secrets in its text replaced (numbers pass untouched, free):
    the field policies (drop, hash, mask) apply on top, in the writer. A frame whose text
    held something to redact comes back as its rows, a list of row dicts."""
    if type(value) is dict:  # a model's outputs, once per record: the common case first
        for item in value.values():
            if type(item) is not np.ndarray or item.dtype.kind not in "biufc":
                return {k: scrubbed(v) for k, v in value.items()}
        return value  # numbers only (a classifier's label and probabilities): as is
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            return value
        return np.asarray(redact_value(value.tolist()), dtype=object)
    if isinstance(value, pd.DataFrame):
        # Once per record of a frame model, so no pandas work beyond one conversion: the
        # frame's rows as the writer makes them (`raw_rows`), every string redacted. A frame
        # with nothing to redact comes back as it is; one with something, as those rows.
        rows = raw_rows(value)
        changed = False
        for row in rows:
            for name, item in row.items():
                if isinstance(item, str):
                    redacted = redact_text(item)
                    if redacted is not item:
                        row[name], changed = redacted, True
        return rows if changed else value
    if isinstance(value, Mapping):
        if all(type(v) is np.ndarray and v.dtype.kind in "biufc" for v in value.values()):
            return value  # numbers only (a classifier's label and probabilities): as is
        return {k: scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return redact_value(list(value))
    if isinstance(value, str):
        return redact_text(value)
    return value


def compact(report: DriftReport) -> dict[str, dict[str, Any]]:
    """Per key: rows, each statistic's value, drifted and why (for figures, the API, plots)."""
    return {
        key: {
            "role": item.role,
            "rows": item.rows,
            **{s: item.statistics[s].value if s in item.statistics else None
               for s in STATISTICS},
            "drifted": item.drifted,
            "reason": item.reason,
        }
        for key, item in report.fields.items()
    }


def error_class(status: int, context: Mapping[str, Any]) -> str:
    """The bounded error class of a failed request (never anything the caller sent)."""
    if status == 429 or context.get("error") in ("overloaded", "unavailable"):
        return "overloaded"
    if status < 500:
        return "bad_input"
    if context.get("error") == "model_failure":
        return "timeout" if context.get("timeout") else "model_failure"
    return "internal"


class Monitor:
    """Server-wide: owns the metrics, the variant monitors, the writer and the flusher."""

    def __init__(
        self,
        metrics: ServiceMetrics,
        *,
        records: Callable[[str, MonitoringConfig], RecordWriter | None] | None = None,
        flush_s: float = FLUSH_S,
    ) -> None:
        self.metrics = metrics
        self.variants: dict[Key, VariantMonitor] = {}
        # Per deployment: rules on one figure, and rules on a family ("drift.psi.*": each
        # matching figure is judged on its own, its suffix in the alert's `field`).
        self.alerts: dict[str, tuple[AlertEvaluator, AlertEvaluator]] = {}
        self._alert_config: dict[str, Any] = {}
        self._performance: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self.pairs: deque[tuple[str, tuple[str, str], tuple[str, str], Mapping[str, Any],
                                Mapping[str, Any]]] = deque()
        self.paired: dict[tuple[str, str, str], PairedStats] = {}
        self.writers: dict[str, RecordWriter] = {}
        self._make_writer = records
        self.flush_s = flush_s
        # Drains whatever queues finished requests before `finished` (the access log).
        self.upstream: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._last_alerts = 0.0
        self._live: dict[str, tuple[int, float]] = {}  # deployment -> (revision, wall time)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shipyard-monitor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.flush()
        for writer in self.writers.values():
            writer.close()
        for evaluators in self.alerts.values():
            for evaluator in evaluators:
                evaluator.close()
        with self._lock:
            # The KLL sketches are C++ objects: freeing them now, not at interpreter exit,
            # keeps nanobind from reporting them as leaks.
            self.variants.clear()

    def serving(self, deployment: str, revision: int, at: float | None = None) -> None:
        """Note that this process answers `deployment` with `revision` from `at` (now)."""
        self._live[deployment] = (revision, time.time() if at is None else at)

    def live_since(self, deployment: str, revision: int) -> float | None:
        """When this process began answering `deployment` with `revision`: `inf` while it
        still answers with another (its traffic is not yet that revision's), None when it
        does not serve `deployment` at all."""
        found = self._live.get(deployment)
        if found is None:
            return None
        return found[1] if found[0] == revision else math.inf

    def attach(self, deployment: str, variants: Mapping[str, Served],
               config: MonitoringConfig, inflight: Callable[[], int] | None = None) -> None:
        """Register the variants of a newly loaded revision (called before it serves)."""
        with self._lock:
            for name, served in variants.items():
                key = (deployment, name, served.model.version)
                current = self.variants.get(key)
                if current is None:
                    current = self.variants[key] = VariantMonitor(
                        key, served.model, config,
                        self.metrics.variant(deployment, name, served.model.version, config.cost),
                    )
                current.config, current.role, current.served = config, served.role, served
                current.model, current.inflight = served.model, inflight
                served.keep.value = current.share_to_keep(None)
                current.keep = served.keep  # the new revision's variant draws from this one
                current._batches_seen = served.stats.batches if served.stats else 0
                current._cpu_seen = served.stats.cpu_s if served.stats else 0.0
            wanted = (config.alerts, config.webhook)
            if self._alert_config.get(deployment) != wanted:
                # Same rules: keep the evaluators, so pending and firing states carry over.
                for old in self.alerts.pop(deployment, ()):
                    old.close()
                exact = [r for r in config.alerts if not r.metric.endswith(WILDCARD)]
                pattern = [r for r in config.alerts if r.metric.endswith(WILDCARD)]
                # The webhook may be a ${secret:NAME} reference: resolved here, never stored.
                found = resolve(config.webhook) if config.webhook else None
                webhook = found.reveal() if isinstance(found, Secret) else found
                self.alerts[deployment] = (
                    AlertEvaluator(exact, webhook=webhook),
                    AlertEvaluator(pattern, webhook=webhook),
                )
                self._alert_config[deployment] = wanted
            writer = self.writers.get(deployment)
            if writer is not None and writer.config.store != config.records.store:
                # Another store kind needs another writer; the old one drains first.
                self.writers.pop(deployment).close()
                writer = None
            if writer is not None:
                writer.reconfigure(config.records)
            elif self._make_writer is not None:
                made = self._make_writer(deployment, config)
                if made is not None:
                    self.writers[deployment] = made

    # -- hot path ----------------------------------------------------------------------------

    def finished(self, requests: Iterable[tuple[float, str, int, float, Handed]]) -> None:
        """Requests answered, in bulk: (time, request id, status, latency s, handed) each,
        where `handed` is the request's context, kept for the flush, or only its variant's
        key, when it is only counted (`keeps` decides which; errors, timeouts and fallbacks
        always come with their context). One tuple is appended per request; the flusher
        reads the rest from the context. The server hands them over from its access log's
        thread (see its module)."""
        variants = self.variants
        for at, request_id, status, seconds, handed in requests:
            if isinstance(handed, tuple):
                monitor = variants.get(handed)
                if monitor is not None:
                    monitor.seen.append((at, request_id, status, seconds, None))
                continue
            monitor = variants.get(handed.get("key"))  # type: ignore[arg-type]
            if monitor is None:
                continue
            # `_fallback` sets "timeout" (True or False) on every request that fell back.
            if status >= 400 or "timeout" in handed:
                self._unusual(monitor, handed, status)
            monitor.seen.append((at, request_id, status, seconds, handed))

    def keeps(self, context: Mapping[str, Any], status: int) -> bool:
        """Whether a request's context goes to `finished` (or only its key): always for an
        error, a timeout or a fallback, otherwise by its variant's draw."""
        monitor = self.variants.get(context.get("key"))  # type: ignore[arg-type]
        return monitor is None or status >= 400 or "timeout" in context or monitor.keep.draw()

    def finish(self, context: Mapping[str, Any], request_id: str, status: int,
               seconds: float) -> None:
        """One request answered now; as `finished`, with the draw made here."""
        handed = context if self.keeps(context, status) else context["key"]
        self.finished(((time.time(), request_id, status, seconds, handed),))

    @staticmethod
    def _unusual(monitor: VariantMonitor, context: Mapping[str, Any], status: int) -> None:
        if status >= 400:
            monitor.metrics.error(error_class(status, context))  # a timeout counts as one
        elif context.get("timeout"):
            monitor.metrics.timeout()  # timed out, then the fallback answered
        if context.get("fallback"):
            monitor.metrics.fallback()

    def shadow_done(self, deployment: str, primary: tuple[str, str], shadow: tuple[str, str],
                    request_id: str, primary_outputs: Mapping[str, Any],
                    shadow_outputs: Mapping[str, Any], batch: Any, seconds: float) -> None:
        """A shadow answered (after the caller's response): compare, sketch and record it."""
        self.pairs.append((deployment, primary, shadow, primary_outputs, shadow_outputs))
        monitor = self.variants.get((deployment, *shadow))
        if monitor is None:
            return
        # Its own record id: the caller's request id names the champion's record.
        monitor.seen.append((time.time(), f"{request_id}~{shadow[0]}", 200, seconds,
                             {"batch": batch, "outputs": shadow_outputs}))

    def violation(self, key: Key, kind: str) -> None:
        """A guardrail flagged or blocked something this variant saw or said."""
        monitor = self.variants.get(key)
        if monitor is not None:
            monitor.metrics.violation(kind)

    def shadow_failed(self, deployment: str, variant: str, version: str,
                      exc: BaseException) -> None:
        monitor = self.variants.get((deployment, variant, version))
        if monitor is None:
            return
        status = 503 if not isinstance(exc, ShipyardError) else exc.status
        monitor.metrics.error(error_class(status, {"timeout": isinstance(exc, TimeoutError),
                                                   "error": "model_failure"}))
        monitor.seen.append((time.time(), "", status, 0.0,
                             {"timeout": isinstance(exc, TimeoutError)}))

    def paired_of(self, deployment: str) -> dict[str, dict[str, Any]]:
        """Agreement of each shadow with the answers callers got, by shadow variant."""
        return {key[1]: stats.to_json() for key, stats in list(self.paired.items())
                if key[0] == deployment}

    def _flush_pairs(self) -> None:
        for _ in range(len(self.pairs)):
            deployment, primary, shadow, first, second = self.pairs.popleft()
            key = (deployment, shadow[0], shadow[1])
            stats = self.paired.get(key)
            if stats is None or stats.primary != primary:
                stats = self.paired[key] = PairedStats(primary, shadow)
            stats.add(first, second)

    # -- the flusher -------------------------------------------------------------------------

    def _run(self) -> None:
        name_thread()
        pace = Pacer()
        while not self._stop.wait(self.flush_s):
            pace.restart()
            try:
                self.flush(pace=pace)
            except Exception:  # the flusher must outlive any one bad batch
                log.exception("monitor flush failed")

    def flush(self, now: float | None = None,
              pace: Callable[[], None] = give_way_never) -> None:
        """Process everything gathered; one flush at a time, so a caller that flushes (the
        feedback route, the controller) returns only once every request so far is handed on.
        The flusher's own thread passes its `pace`; a caller's flush runs straight through."""
        if self.upstream is not None:
            self.upstream()  # requests finished but still queued upstream come first
        with self._flushing:
            self._flush(time.time() if now is None else now, pace)

    def _flush(self, now: float, pace: Callable[[], None]) -> None:
        with self._lock:
            monitors = list(self.variants.values())
        self._flush_pairs()
        for monitor in monitors:
            count = monitor.flush(now, self.writers.get(monitor.key[0]), pace)
            with self._lock:  # against an attach turning records on meanwhile
                monitor.keep.value = monitor.share_to_keep(count or None)
            if now - monitor.last_drift >= monitor.config.drift.slide_s:
                monitor.evaluate_drift(now)
                pace()
        self.metrics.update_resources()
        # Alerts follow the fastest drift window, at most every ALERT_EVERY_S.
        every = min([ALERT_EVERY_S, *(m.config.drift.slide_s for m in monitors)])
        if now - self._last_alerts >= every:
            self._last_alerts = now
            self.evaluate_alerts(now)

    def render_metrics(self, accept_header: str | None = None) -> tuple[bytes, str]:
        """The /metrics exposition, after a flush: requests reach their counters there."""
        try:
            self.flush(pace=Pacer())
        except Exception:  # the scrape still answers, as of the last good flush
            log.exception("monitor flush before a scrape failed")
        return self.metrics.render(accept_header)

    def evaluate_alerts(self, now: float) -> None:
        for deployment, (exact, pattern) in list(self.alerts.items()):
            for monitor in self.for_deployment(deployment):
                _, variant, version = monitor.key
                scope = {"deployment": deployment, "variant": variant, "model_version": version}
                figures = {**monitor.figures(now), **self._labelled_figures(monitor)}
                exact.evaluate(figures, now, scope)
                prefixes = {r.metric[: -len(WILDCARD)] + "." for r in pattern.rules}
                suffixes = {
                    name[len(prefix):]
                    for name in figures for prefix in prefixes if name.startswith(prefix)
                }
                for suffix in sorted(suffixes):
                    pattern.evaluate(
                        {r.metric: figures.get(r.metric[: -len(WILDCARD)] + "." + suffix)
                         for r in pattern.rules},
                        now,
                        {**scope, "field": suffix},
                    )

    def _labelled_figures(self, monitor: VariantMonitor) -> dict[str, float | None]:
        """accuracy, f1_macro, rmse... of this version on all its labelled rows, and per
        slice as `METRIC.FIELD=VALUE`."""
        try:
            report = self.performance_of(monitor.key[0])
        except Exception:
            log.exception("could not compute performance of %s", monitor.key[0])
            return {}
        figures: dict[str, float | None] = {}
        for cell in (report or {}).get("cells", []):
            if cell["model"] != monitor.model.name or cell["version"] != monitor.key[2]:
                continue
            figures.update(cell_figures(cell))
        return figures

    def alerts_of(self, deployment: str) -> dict[str, Any]:
        """Pending and firing alerts of a deployment, and its latest transitions."""
        evaluators = self.alerts.get(deployment, ())
        return {
            "active": [a for e in evaluators for a in e.active()],
            "history": sorted((h for e in evaluators for h in e.history),
                              key=lambda h: h.get("at", 0))[-100:],
        }

    # -- what the API reads --------------------------------------------------------------------

    def schema_of(self, model: str, version: str) -> Schema | None:
        with self._lock:
            for monitor in self.variants.values():
                if monitor.model.name == model and monitor.model.version == version:
                    return monitor.model.schema
        return None

    def config_of(self, deployment: str) -> MonitoringConfig:
        monitors = self.for_deployment(deployment)
        if not monitors:
            raise NotFoundError(f"No deployment {deployment!r} is monitored here.",
                                hint="GET /v1/deployments lists the served deployments.")
        return monitors[-1].config

    def _store(self, deployment: str) -> RecordStore:
        writer = self.writers.get(deployment)
        if writer is None:
            raise NotFoundError(
                f"Deployment {deployment!r} keeps no prediction records, so feedback has "
                "nothing to join.",
                hint="Set monitoring.records.sample above 0 in the deployment's config.",
            )
        if not isinstance(writer.sink, RecordStore):
            raise NotFoundError(f"Deployment {deployment!r} keeps its records elsewhere.",
                                hint="Feedback needs the database or Parquet record store.")
        return writer.sink

    def feedback(self, deployment: str, payload: Any) -> dict[str, Any]:
        """Store one label or human feedback for a served request (the feedback route)."""
        if not isinstance(payload, dict) or not isinstance(payload.get("request_id"), str):
            raise UserError(
                "Feedback needs a JSON object with a string request_id.",
                hint='Send {"request_id": "...", "label": ...} or thumbs, score, comment.',
                field="request_id",
            )
        unknown = sorted(set(payload) - FEEDBACK_FIELDS)
        if unknown:
            raise UserError(
                f"Unknown feedback field {unknown[0][:64]!r}.",
                hint=f"Feedback fields: {', '.join(sorted(FEEDBACK_FIELDS))}.",
                field=unknown[0][:64],
            )
        config = self.config_of(deployment)
        store = self._store(deployment)
        fields = {k: payload.get(k) for k in FEEDBACK_FIELDS if k != "request_id"}
        comment = fields.get("comment")
        if isinstance(comment, str):
            fields["comment"] = redact_text(comment)  # free text: PII stays out

        def submit() -> Feedback:
            return submit_feedback(
                store, deployment, payload["request_id"], **fields,
                retention_days=config.records.retention_days, schema_of=self.schema_of,
            )

        try:
            stored = submit()
        except NotFoundError:
            # The prediction may be answered but not yet written: flush, then look again.
            self.flush()
            self.writers[deployment].flush()
            stored = submit()
        self._performance.pop(deployment, None)  # the next reader sees the new label
        return {"stored": True, **asdict(stored)}

    def import_feedback(self, deployment: str, path: Path) -> ImportReport:
        config = self.config_of(deployment)
        return import_feedback(self._store(deployment), deployment, path,
                               retention_days=config.records.retention_days,
                               schema_of=self.schema_of)

    def performance_of(self, deployment: str, *, refresh: bool = False) -> dict[str, Any] | None:
        """Performance per version and slice from labelled records (cached PERF_EVERY_S)."""
        now = time.time()
        cached = self._performance.get(deployment)
        if cached is not None and not refresh and now - cached[0] < PERF_EVERY_S:
            return cached[1]
        if deployment not in self.writers:
            return None
        config = self.config_of(deployment)
        report = performance(self._store(deployment), deployment, slices=config.slices,
                             schema_of=self.schema_of).to_json()
        self._performance[deployment] = (now, report)
        return report

    def drift_of(self, deployment: str, window_s: float | None = None) -> dict[str, Any]:
        """Drift of every variant over the last `window_s` (default: the configured window)."""
        now = time.time()
        self.flush(now)
        variants = []
        for monitor in self.for_deployment(deployment):
            _, variant, version = monitor.key
            report = monitor.report(now, window_s)
            variants.append({"variant": variant, "model_version": version,
                             "report": report.to_json() if report is not None else None})
        if not variants:
            self.config_of(deployment)  # raises the clear 404
        return {"deployment": deployment, "time": now, "window_s": window_s, "variants": variants}

    def for_deployment(self, deployment: str) -> list[VariantMonitor]:
        with self._lock:
            return [m for m in self.variants.values() if m.key[0] == deployment]
