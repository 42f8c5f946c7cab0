"""Service metrics in the Prometheus exposition format, with the official `prometheus_client`.

One `ServiceMetrics` per server process owns the series and renders `/metrics`. The serving
path never touches a metric family: it holds a `VariantMetrics` handle per (deployment,
variant, model version) whose label children are bound once, so each hot-path call is an
increment or an observation on a pre-built child (docs/metrics.md has the measured costs).

Several workers (`--workers N`) run in prometheus_client's multi-process mode: each process
writes its samples to memory-mapped files under `PROMETHEUS_MULTIPROC_DIR`, and the worker
that answers a scrape merges every file. The library picks its mode from that variable when
it is first imported, so the server must set it before the workers start (see
`prepare_multiprocess`).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from shipyard.errors import ConfigError
from shipyard.routing import CostConfig

__all__ = [
    "ERROR_CLASSES",
    "LATENCY_BUCKETS",
    "MULTIPROC_ENV",
    "OTHER",
    "ServiceMetrics",
    "VariantMetrics",
    "mark_dead",
    "observe_many",
    "prepare_multiprocess",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"  # the label value that label sets past the cap collapse into
LABELS = ("deployment", "variant", "model_version")
ERROR_CLASSES = ("bad_input", "model_failure", "timeout", "overloaded", "internal")
# 0.2 ms (a small scikit-learn model on one row) to 10 s (a large model under load).
LATENCY_BUCKETS = (
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_MAX_LABEL_LEN = 128  # a label value is an index key in Prometheus: keep it short
_MAX_POLICIES = 32  # distinct policy names per variant before they collapse into "other"


def _label(value: object) -> str:
    text = str(value)[:_MAX_LABEL_LEN]
    return text if text.strip() else "unknown"  # "" means "label absent" to Prometheus


class _Families:
    """Every metric family, registered into `registry` (None in multi-process mode)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        cost_labels = (*LABELS, "currency")
        self.requests = Counter(
            "shipyard_requests", "Requests answered, by status class.", (*LABELS, "code"),
            registry=r,
        )
        self.duration = Histogram(
            "shipyard_request_duration_seconds", "Time from request to response.", LABELS,
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.errors = Counter(
            "shipyard_errors", "Failed requests, by error class.", (*LABELS, "class"), registry=r
        )
        self.timeouts = Counter("shipyard_timeouts", "Model calls past the timeout.", LABELS,
                                registry=r)
        self.fallbacks = Counter("shipyard_fallbacks", "Requests answered by the fallback.",
                                 LABELS, registry=r)
        # livesum: the server's in-flight total is the sum over its live workers.
        self.inflight = Gauge("shipyard_inflight_requests", "Requests being answered now.",
                              LABELS, multiprocess_mode="livesum", registry=r)
        self.queue_depth = Gauge("shipyard_batch_queue_depth", "Rows waiting in the batcher.",
                                 LABELS, multiprocess_mode="livesum", registry=r)
        self.batch_size = Histogram("shipyard_batch_size", "Rows per model call.", LABELS,
                                    buckets=BATCH_BUCKETS, registry=r)
        self.predictions = Counter("shipyard_predictions", "Rows predicted by the model.",
                                   LABELS, registry=r)
        self.model_cpu = Counter("shipyard_model_cpu_seconds", "CPU time of model calls.",
                                 LABELS, registry=r)
        self.cost = Counter("shipyard_cost", "Accumulated cost from the deployment's cost "
                            "model.", cost_labels, registry=r)
        self.violations = Counter("shipyard_violations", "Guardrail and policy violations.",
                                  (*LABELS, "policy"), registry=r)
        self.collapsed = Counter("shipyard_metric_label_sets_collapsed",
                                 "Label sets past the cap, counted into 'other'.", registry=r)
        # Per process: a process serves several variants, so these carry no variant labels.
        # liveall: one series per live worker (with a pid label in multi-process mode).
        self.cpu = Counter("shipyard_process_cpu_seconds", "User and system CPU time.",
                           registry=r)
        self.rss = Gauge("shipyard_process_resident_memory_bytes", "Resident memory.",
                         multiprocess_mode="liveall", registry=r)
        self.threads = Gauge("shipyard_process_threads", "OS threads of the process.",
                             multiprocess_mode="liveall", registry=r)


_process_families: _Families | None = None  # multi-process mode: one set per process
_process_lock = threading.Lock()


def _shared_families() -> _Families:
    # In multi-process mode every value lives in this process's mmap files, keyed by metric
    # and labels: two family objects for one name would overwrite each other's counts.
    global _process_families
    with _process_lock:
        if _process_families is None:
            _process_families = _Families(None)
        return _process_families


class VariantMetrics:
    """The hot-path handle of one (deployment, variant, model version): children pre-bound."""

    __slots__ = (
        "_batch", "_cost", "_cpu", "_cpu_price", "_duration", "_errors", "_fallback",
        "_families", "_inflight", "_labels", "_policies", "_predictions", "_queue",
        "_request_price", "_requests", "_timeout", "labels",
    )

    def __init__(self, families: _Families, labels: tuple[str, str, str],
                 cost: CostConfig) -> None:
        f = families
        self._families = f
        self._labels = labels
        self.labels = dict(zip(LABELS, labels, strict=True))
        # 2xx, 4xx and 5xx exist from the start so rate() and ratios have both sides.
        self._requests: list[Counter | None] = [
            f.requests.labels(*labels, c) if c in ("2xx", "4xx", "5xx") else None
            for c in _CODE_CLASSES
        ]
        self._duration = f.duration.labels(*labels)
        self._errors = {c: f.errors.labels(*labels, c) for c in ERROR_CLASSES}
        self._timeout = f.timeouts.labels(*labels)
        self._fallback = f.fallbacks.labels(*labels)
        self._inflight = f.inflight.labels(*labels)
        self._queue = f.queue_depth.labels(*labels)
        self._batch = f.batch_size.labels(*labels)
        self._predictions = f.predictions.labels(*labels)
        self._cpu = f.model_cpu.labels(*labels)
        self._cost = f.cost.labels(*labels, cost.currency)
        self._request_price = cost.per_request
        self._cpu_price = cost.per_cpu_second
        self._policies: dict[str, Counter] = {}

    def request(self, status: int, seconds: float) -> None:
        """One answered request: its HTTP status and its latency in seconds."""
        index = status // 100 - 1
        if not 0 <= index < 5:
            index = 4  # a status outside 100..599 is our bug: count it as a server error
        self._requests_of(index).inc()
        # NaN or inf would poison the histogram's sum forever; a negative clock step is noise.
        if 0.0 <= seconds < math.inf:
            self._duration.observe(seconds)
        if self._request_price:
            self._cost.inc(self._request_price)

    def requests(self, statuses: np.ndarray, seconds: np.ndarray) -> None:
        """Many answered requests at once, as `request` for each (status, seconds) pair: a
        few vectorised steps and one update per status class and latency bucket. The
        server's monitor counts requests this way, once a second, off the event loop."""
        if not len(statuses):
            return
        index = np.asarray(statuses, dtype=np.int64) // 100 - 1
        index[(index < 0) | (index > 4)] = 4  # outside 100..599: our bug, a server error
        for code, count in enumerate(np.bincount(index, minlength=5).tolist()):
            if count:
                self._requests_of(code).inc(count)
        seconds = np.asarray(seconds, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            observe_many(self._duration, seconds[(seconds >= 0.0) & (seconds < math.inf)])
        if self._request_price:
            self._cost.inc(self._request_price * len(index))

    def _requests_of(self, code: int) -> Counter:
        """The requests child of status class `code` (0 for 1xx ... 4 for 5xx), bound on
        first use for the classes that do not exist from the start."""
        child = self._requests[code]
        if child is None:
            child = self._requests[code] = self._families.requests.labels(
                *self._labels, _CODE_CLASSES[code]
            )
        return child

    def error(self, cls: str) -> None:
        """A failed request, by class (ERROR_CLASSES; anything else counts as internal)."""
        child = self._errors.get(cls)
        if child is None:
            child = self._errors["internal"]
        child.inc()
        if cls == "timeout":
            self._timeout.inc()  # timeouts_total always equals errors_total{class="timeout"}

    def timeout(self) -> None:
        """A model call past its timeout (also counted as an error of class timeout)."""
        self.error("timeout")

    def fallback(self) -> None:
        """A request answered by the fallback instead of this variant."""
        self._fallback.inc()

    def batch(self, rows: int, model_cpu_s: float) -> None:
        """One model call: the rows it predicted and the CPU seconds it took."""
        if rows > 0:
            self._batch.observe(rows)
            self._predictions.inc(rows)
        if 0.0 < model_cpu_s < math.inf:
            self._cpu.inc(model_cpu_s)
            if self._cpu_price:
                self._cost.inc(model_cpu_s * self._cpu_price)

    def violation(self, policy: str) -> None:
        """A guardrail or policy violation (policy names past a small cap become 'other')."""
        child = self._policies.get(policy)
        if child is None:
            name = _label(policy) if len(self._policies) < _MAX_POLICIES else OTHER
            child = self._families.violations.labels(*self._labels, name)
            self._policies[policy if name != OTHER else OTHER] = child
        child.inc()

    def set_inflight(self, n: int) -> None:
        self._inflight.set(n)

    def set_queue_depth(self, n: int) -> None:
        self._queue.set(n)


class ServiceMetrics:
    """The series of one server process and their exposition (`render`).

    `multiprocess_dir` turns on multi-process mode; it must be the folder named by
    `PROMETHEUS_MULTIPROC_DIR` in this process's environment when prometheus_client was
    imported (`from_environ` reads it from there).
    """

    def __init__(self, multiprocess_dir: str | Path | None = None, *,
                 max_label_sets: int = 500) -> None:
        library_multiprocess = bool(getattr(values.ValueClass, "_multiprocess", False))
        self.multiprocess_dir = Path(multiprocess_dir) if multiprocess_dir else None
        if self.multiprocess_dir is not None:
            _check_multiprocess(self.multiprocess_dir, library_multiprocess)
        elif library_multiprocess:
            raise ConfigError(
                f"Got {MULTIPROC_ENV} set in the environment but no multiprocess_dir. Expected "
                "both or neither: this process writes its metrics to that folder.",
                hint="Build it with ServiceMetrics.from_environ().",
            )
        if max_label_sets < 1:
            raise ConfigError(f"Got max_label_sets={max_label_sets}. Expected at least 1.",
                              hint="Use the default (500).")
        self.registry = CollectorRegistry(auto_describe=True)
        if self.multiprocess_dir is not None:
            self._families = _shared_families()
            MultiProcessCollector(self.registry, path=str(self.multiprocess_dir))
        else:
            self._families = _Families(self.registry)
        self.max_label_sets = max_label_sets
        self._variants: dict[tuple[str, ...], VariantMetrics] = {}
        self._label_sets: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()
        self._last_cpu = time.process_time()
        self.update_resources()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *,
                     max_label_sets: int = 500) -> ServiceMetrics:
        """Multi-process mode when PROMETHEUS_MULTIPROC_DIR is set, else a plain registry."""
        env = os.environ if environ is None else environ
        return cls(env.get(MULTIPROC_ENV) or None, max_label_sets=max_label_sets)

    def variant(self, deployment: str, variant: str, model_version: str,
                cost: CostConfig | None = None) -> VariantMetrics:
        """The handle of one variant; the same handle for the same labels (call off the hot
        path: on load or on a revision switch). Past `max_label_sets` distinct label sets,
        new ones share the handle labelled 'other' on all three labels."""
        cost = cost or CostConfig()
        labels = (_label(deployment), _label(variant), _label(model_version))
        with self._lock:
            if labels not in self._label_sets:
                if len(self._label_sets) >= self.max_label_sets:
                    self._families.collapsed.inc()
                    labels = (OTHER, OTHER, OTHER)
                else:
                    self._label_sets.add(labels)
            key = (*labels, cost.model_dump_json())  # pydantic models do not hash
            handle = self._variants.get(key)
            if handle is None:
                handle = self._variants[key] = VariantMetrics(self._families, labels, cost)
            return handle

    def update_resources(self) -> None:
        """Sample this process's CPU, memory and threads. Call it every few seconds in every
        worker (render() calls it too, for the worker that answers the scrape)."""
        with self._lock:
            now = time.process_time()
            delta, self._last_cpu = now - self._last_cpu, now
            if delta > 0:
                self._families.cpu.inc(delta)
        self._families.rss.set(_rss_bytes())
        self._families.threads.set(_thread_count())

    def render(self, accept_header: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type, negotiated from the Accept header
        (OpenMetrics when the scraper asks for it, else the Prometheus text format)."""
        self.update_resources()
        if self.multiprocess_dir is not None:
            _reap_dead_workers(self.multiprocess_dir)
        encoder, content_type = choose_encoder(accept_header or "")
        return encoder(self.registry), content_type


def observe_many(histogram: Histogram, amounts: np.ndarray) -> None:
    """`histogram.observe(a)` for every `a` in `amounts`, in one pass: each bucket and the sum
    are updated once. prometheus_client has no bulk observe; this reads the child's bucket
    bounds and values as its `observe` does (`_upper_bounds`, `_buckets`, `_sum`), and a test
    pins the exposition of both ways to be the same."""
    if not len(amounts):
        return
    bounds = histogram._upper_bounds  # ends with +inf: every amount falls in some bucket
    # The first bound >= the amount: observe's `amount <= bound`.
    counts = np.bincount(np.searchsorted(bounds, amounts, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(np.sum(amounts)))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)


def _check_multiprocess(directory: Path, library_multiprocess: bool) -> None:
    env = os.environ.get(MULTIPROC_ENV)
    same = env is not None and Path(env).resolve() == directory.resolve()
    if not (library_multiprocess and same and directory.is_dir()):
        raise ConfigError(
            f"Got multiprocess_dir={str(directory)!r} but this process has "
            f"{MULTIPROC_ENV}={env!r}. Expected the same existing folder, set before "
            "prometheus_client was first imported.",
            hint="Call prepare_multiprocess(dir) and set the variable in the environment of "
            "the worker processes before they start.",
        )


def prepare_multiprocess(directory: str | Path) -> Path:
    """Create the multi-process folder, or empty it of a previous run's files. Call it once
    in the parent before the workers start, then set PROMETHEUS_MULTIPROC_DIR for them."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"Got {str(path)!r} for the metrics folder. Expected a folder; it "
                          "is a file.", hint="Pick a path that is a folder or does not exist.")
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # only the library's files: never a user's other files
        stale.unlink(missing_ok=True)
    return path.resolve()


def mark_dead(pid: int, directory: str | Path) -> None:
    """Forget a dead worker's live gauges (in-flight, queue depth, memory, threads); its
    counters stay, so totals never go backwards."""
    mark_process_dead(pid, str(directory))


def _reap_dead_workers(directory: Path) -> None:
    # A supervisor that restarts workers (uvicorn) gives us no exit hook: find live-gauge
    # files whose process is gone, so in-flight and memory stop counting a dead worker.
    pids: set[int] = set()
    for file in directory.glob("gauge_live*_*.db"):
        tail = file.stem.rsplit("_", 1)[-1]
        if tail.isdigit():
            pids.add(int(tail))
    for pid in pids - {os.getpid()}:
        if not _alive(pid):
            mark_dead(pid, directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> float:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return float(int(statm.read().split()[1]) * _PAGE)
    except (OSError, IndexError, ValueError):
        import resource  # not Linux: the peak, the best the platform offers

        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def _thread_count() -> float:
    try:
        return float(len(os.listdir("/proc/self/task")))  # native threads too (BLAS, ONNX)
    except OSError:
        return float(threading.active_count())
