"""Alert rules over measured figures: inactive -> pending -> firing -> resolved.

`AlertEvaluator.evaluate` is handed the figures of one scope (a deployment's variant and model
version) at a time `now`, compares each rule's figure to its threshold and moves the rule's
state for that scope. Every transition is an `AlertEvent`, returned and handed to the sinks:
the log (one structured line each) and a webhook (POSTed from a background thread, so
evaluate never waits on the network). A missing, None or NaN figure changes nothing: the state
stays and is marked "no data" (a scrape gap must neither fire nor resolve an alert).
It measures; it never decides: the rollout controller reads `active()`.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from shipyard.cpu import name_thread
from shipyard.errors import ConfigError
from shipyard.routing import AlertRule
from shipyard.security.urls import check_outbound

__all__ = ["AlertEvaluator", "AlertEvent", "AlertSink", "LogSink", "State", "WebhookSink"]

log = logging.getLogger("shipyard.alerts")

State = Literal["inactive", "pending", "firing", "resolved"]
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le
}


@dataclass(frozen=True)
class AlertEvent:
    """One transition of one rule in one scope."""

    rule: str
    metric: str
    op: str
    threshold: float
    severity: str
    scope: dict[str, str]
    previous: State
    state: State
    value: float | None
    at: float  # the `now` of the evaluation (seconds since the epoch)
    since: float | None  # when the condition started to hold (None once inactive)
    reason: str

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["value"] = _finite_or_text(self.value)
        body["threshold"] = _finite_or_text(self.threshold)
        return body


class AlertSink(Protocol):
    """Where transitions go. `send` must return at once; `close` drains what is queued."""

    def send(self, event: AlertEvent) -> None: ...

    def close(self) -> None: ...


class LogSink:
    """One JSON line per transition on the `shipyard.alerts` logger."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log

    def send(self, event: AlertEvent) -> None:
        body = event.to_json()
        level = logging.INFO
        if event.state == "firing":
            level = logging.ERROR if event.severity == "critical" else logging.WARNING
        self.logger.log(level, "alert %s", json.dumps(body, sort_keys=True, ensure_ascii=False),
                        extra={"alert": body})

    def close(self) -> None:
        return None



class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect could lead a POST to another host or scheme: treat it as a failure instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookSink:
    """POSTs each event as JSON to an http(s) URL from one daemon thread: a short timeout,
    a few retries with backoff on network errors, 5xx, 408 and 429, then a logged failure.
    The queue is bounded; when full the oldest event is dropped (counted in `dropped`)."""

    def __init__(self, url: str, *, timeout_s: float = 2.0, retries: int = 3,
                 backoff_s: float = 0.5, max_queue: int = 1000,
                 states: Iterable[State] = ("firing", "resolved")) -> None:
        parts = urlsplit(url)
        check_outbound(url, "alert webhook")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"Got {parts.scheme or 'no'} scheme for the alert webhook. Expected an http:// "
                "or https:// URL with a host.", hint="Set monitoring.webhook to such a URL.",
            )
        self._url = url
        # The path of a webhook URL is often its secret (Slack, Teams): never log or show it.
        self.shown = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
        self.timeout_s, self.retries, self.backoff_s = timeout_s, max(0, retries), backoff_s
        self.states = frozenset(states)
        self.sent = self.failed = self.dropped = 0
        self._queue: deque[AlertEvent] = deque()
        self._max_queue = max(1, max_queue)
        self._busy = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._opener = urllib.request.build_opener(_NoRedirect())

    def __repr__(self) -> str:
        return f"WebhookSink({self.shown!r}, sent={self.sent}, failed={self.failed})"

    def send(self, event: AlertEvent) -> None:
        if event.state not in self.states:
            return
        with self._cond:
            if self._closing:
                return
            if len(self._queue) >= self._max_queue:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(event)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="shipyard-webhook",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued event is delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        self.flush(timeout_s)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        name_thread()
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                event = self._queue.popleft()
                self._busy += 1
            try:
                ok = self._deliver(event)
            finally:
                with self._cond:
                    self._busy -= 1
                    if ok:
                        self.sent += 1
                    else:
                        self.failed += 1
                    self._cond.notify_all()

    def _deliver(self, event: AlertEvent) -> bool:
        body = json.dumps(event.to_json(), ensure_ascii=False).encode()
        why = ""
        for attempt in range(self.retries + 1):
            if attempt:
                with self._cond:  # back off, but wake at once when the sink closes
                    self._cond.wait_for(lambda: self._closing,
                                        self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
                self._url, data=body, method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "shipyard-alerts"},
            )
            try:
                with self._opener.open(request, timeout=self.timeout_s) as response:
                    response.read()
                return True
            except urllib.error.HTTPError as exc:
                why = f"HTTP {exc.code}"
                exc.close()
                if exc.code < 500 and exc.code not in (408, 429):
                    break  # the receiver refuses this payload: retrying will not help
            except (OSError, ValueError) as exc:  # refused, reset, timed out, bad response
                why = type(exc).__name__
        log.warning("alert webhook %s gave up on %s (%s) after %d attempt(s): %s",
                    self.shown, event.rule, event.state, attempt + 1, why)
        return False


@dataclass
class _RuleState:
    rule: AlertRule
    scope: dict[str, str]
    state: State = "inactive"
    since: float | None = None
    value: float | None = None
    no_data: bool = True
    updated: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule.name, "metric": self.rule.metric, "op": self.rule.op,
            "threshold": _finite_or_text(self.rule.threshold), "severity": self.rule.severity,
            "scope": dict(self.scope), "state": self.state, "since": self.since,
            "value": _finite_or_text(self.value), "no_data": self.no_data,
            "updated": self.updated,
        }


@dataclass
class AlertEvaluator:
    """Rule states per (rule, scope), their transitions, and the sinks they go to."""

    rules: Sequence[AlertRule]
    sinks: Sequence[AlertSink] = field(default_factory=lambda: (LogSink(),))
    # Shorthand that adds a WebhookSink; hidden from repr because its path is often a secret.
    webhook: str | None = field(default=None, repr=False)
    history_size: int = 1000
    _states: dict[tuple[str, tuple[tuple[str, str], ...]], _RuleState] = field(
        default_factory=dict, init=False, repr=False
    )
    _history: deque[AlertEvent] = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        names = [r.name for r in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"Got alert rules named {duplicates} more than once. Expected "
                              "unique names.", hint="Rename or merge the duplicated rules.")
        self._history = deque(maxlen=max(1, self.history_size))
        if self.webhook:
            self.sinks = (*self.sinks, WebhookSink(self.webhook))

    def evaluate(self, figures: Mapping[str, float | None], now: float,
                 scope: Mapping[str, str]) -> list[AlertEvent]:
        """Judge every rule that applies to `scope` on `figures`; return the transitions."""
        scope = {str(k): str(v) for k, v in scope.items()}
        key_scope = tuple(sorted(scope.items()))
        events: list[AlertEvent] = []
        with self._lock:
            for rule in self.rules:
                if rule.variant is not None and scope.get("variant") != rule.variant:
                    continue
                st = self._states.get((rule.name, key_scope))
                if st is None:
                    st = self._states[(rule.name, key_scope)] = _RuleState(rule, scope)
                event = _step(st, _figure(figures.get(rule.metric)), now)
                if event is not None:
                    events.append(event)
                    self._history.append(event)
        self._dispatch(events)
        return events

    def retire(self, match: Mapping[str, str], now: float) -> list[AlertEvent]:
        """Forget every state whose scope has all of `match` (a variant that went away);
        pending and firing ones end with a transition, so no alert stays firing forever."""
        events: list[AlertEvent] = []
        with self._lock:
            for key, st in list(self._states.items()):
                if all(st.scope.get(k) == v for k, v in match.items()):
                    if st.state in ("pending", "firing"):
                        after: State = "resolved" if st.state == "firing" else "inactive"
                        events.append(_event(st, after, now, "the scope was retired"))
                        self._history.append(events[-1])
                    del self._states[key]
        self._dispatch(events)
        return events

    def active(self) -> list[dict[str, Any]]:
        """Pending and firing alerts, JSON-able (the API and the rollout controller)."""
        with self._lock:
            return [s.to_json() for s in self._states.values()
                    if s.state in ("pending", "firing")]

    def states(self) -> list[dict[str, Any]]:
        """Every (rule, scope) seen so far, whatever its state, with its no-data flag."""
        with self._lock:
            return [s.to_json() for s in self._states.values()]

    @property
    def history(self) -> list[dict[str, Any]]:
        """The latest transitions, oldest first (at most `history_size`)."""
        with self._lock:
            return [e.to_json() for e in self._history]

    def close(self) -> None:
        for sink in self.sinks:
            _guarded(sink.close)

    def _dispatch(self, events: Iterable[AlertEvent]) -> None:
        # A broken sink must never break evaluation or the other sinks.
        for event in events:
            for sink in self.sinks:
                _guarded(sink.send, event)


def _step(st: _RuleState, value: float | None, now: float) -> AlertEvent | None:
    st.updated = now
    if value is None:
        st.no_data = True  # keep the state: a gap in the data is not a recovery
        return None
    st.no_data = False
    st.value = value
    holds = _OPS[st.rule.op](value, st.rule.threshold)
    if holds:
        if st.state in ("inactive", "resolved"):
            st.since = now
            if st.rule.for_s <= 0:
                return _event(st, "firing", now, "the condition holds (no for-duration)")
            return _event(st, "pending", now, "the condition holds; waiting for for_s")
        if st.state == "pending" and st.since is not None and now - st.since >= st.rule.for_s:
            return _event(st, "firing", now, f"the condition held for {st.rule.for_s:g} s")
        return None
    if st.state == "pending":
        return _event(st, "inactive", now, "the condition stopped holding before for_s")
    if st.state == "firing":
        return _event(st, "resolved", now, "the condition no longer holds")
    return None


def _event(st: _RuleState, after: State, now: float, why: str) -> AlertEvent:
    rule = st.rule
    value = st.value
    shown = "no data" if value is None else f"{value:g}"
    event = AlertEvent(
        rule=rule.name, metric=rule.metric, op=rule.op, threshold=rule.threshold,
        severity=rule.severity, scope=dict(st.scope), previous=st.state, state=after,
        value=value, at=now, since=st.since if after in ("pending", "firing") else None,
        reason=f"{rule.metric} = {shown} ({rule.op} {rule.threshold:g}): {why}",
    )
    st.state = after
    if after in ("inactive", "resolved"):
        st.since = None
    return event


def _figure(raw: object) -> float | None:
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None  # a figure that is not a number is no data, not a crash
    return None if math.isnan(value) else value


def _finite_or_text(value: float | None) -> float | str | None:
    # JSON has no inf or NaN: write them as strings rather than produce invalid JSON.
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _guarded(call: Callable[..., None], *args: object) -> None:
    try:
        call(*args)
    except Exception:  # any sink failure is logged; alerting goes on
        log.exception("alert sink %r failed", getattr(call, "__self__", call))
