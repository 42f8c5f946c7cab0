"""Evidence from monitoring: what the server measured for each variant over a window.

Service figures, drift and confidence come from the server's monitor (the traffic this
process answered: with several workers, the controller's worker sees a random share of all
traffic, which is what ratios and quantiles need). Labels, feedback outcomes and the labelled
pairs behind McNemar's test come from the prediction records and feedback in the database,
which hold every worker's traffic.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from shipyard.monitoring.monitor import Monitor, VariantMonitor
from shipyard.monitoring.recordstore import RecordStore
from shipyard.monitoring.traffic import merged_quantiles
from shipyard.rollout.evidence import ArmEvidence, Evidence, Outcome, Paired

log = logging.getLogger("shipyard.rollout")


def gather(
    monitor: Monitor,
    deployment: str,
    *,
    champion: tuple[str, str],
    candidates: Mapping[str, str],
    configured_split: Mapping[str, float],
    window_s: float,
    since: float,
    now: float,
    digests: Mapping[str, str | None] | None = None,
) -> Evidence:
    """`champion` is (variant, version); `candidates` maps variant -> version; labels and
    outcomes count from `since` (the rollout's start), service figures over `window_s`."""
    monitor.flush(now)
    digests = digests or {}
    by_key = {m.key: m for m in monitor.for_deployment(deployment)}
    store = _store(monitor, deployment)
    labelled = _labelled(monitor, store, deployment, since)
    records = _records(store, deployment, since)
    feedback = _feedback(store, deployment, since)

    def arm(variant: str, version: str) -> ArmEvidence:
        watched = by_key.get((deployment, variant, version))
        return _arm(watched, variant, version, digests.get(variant), window_s, now,
                    labelled.get((variant, version), {}),
                    outcomes(records, feedback, variant, version))

    arms = {name: arm(name, version) for name, version in candidates.items()}
    observed = {champion[0]: arms_requests(by_key, deployment, champion, window_s, now)}
    for name, version in candidates.items():
        observed[name] = arms_requests(by_key, deployment, (name, version), window_s, now)
    return Evidence(
        at=now,
        window_s=window_s,
        champion=arm(*champion),
        candidates=arms,
        paired={name: _paired(monitor, records, feedback, deployment, champion, name)
                for name in candidates},
        configured_split=dict(configured_split),
        observed_split=observed,
    )


def arms_requests(by_key: Mapping[tuple[str, str, str], VariantMonitor], deployment: str,
                  variant: tuple[str, str], window_s: float, now: float) -> int:
    watched = by_key.get((deployment, *variant))
    if watched is None:
        return 0
    return sum(b.requests for b in watched.traffic.window(now, window_s))


def _arm(watched: VariantMonitor | None, variant: str, version: str, digest: str | None,
         window_s: float, now: float, labelled: dict[str, float | None],
         outcomes: dict[str, Outcome]) -> ArmEvidence:
    if watched is None:
        return ArmEvidence(variant, version, digest, figures=dict(labelled), outcomes=outcomes)
    buckets = list(watched.traffic.window(now, window_s))
    # From the buckets' latency histograms (within 1%), over the very buckets counted here.
    found = merged_quantiles(buckets, (0.5, 0.95, 0.99))
    quantiles: dict[str, float | None] = (
        dict(zip(("p50", "p95", "p99"), found, strict=True)) if found is not None else {})
    requests = sum(b.requests for b in buckets)
    figures: dict[str, float | None] = {
        **watched.traffic.figures(now, window_s),
        **watched.figures(now),
        **_confidence(watched, now, window_s),
        **labelled,
    }
    return ArmEvidence(
        variant=variant, version=version, digest=digest, requests=requests,
        errors=min(requests, sum(b.errors for b in buckets)),
        timeouts=min(requests, sum(b.timeouts for b in buckets)),
        latency_ms=quantiles, figures=figures, outcomes=outcomes,
    )


def _confidence(watched: VariantMonitor, now: float, window_s: float) -> dict[str, float]:
    """Mean and quantiles of the classifier's confidence in the window (from the sketch)."""
    window = watched.window(now, window_s)
    found: dict[str, float] = {}
    if window is None:
        return found
    for key in ("confidence.top", "confidence.margin"):
        quantiles = window.quantiles(key, (0.1, 0.5, 0.9))
        bins = window.bins.fields.get(key)
        counts = window.counts.get(key)
        if quantiles is None or bins is None or counts is None or not bins.edges:
            continue
        edges = np.asarray(bins.edges)
        inner = counts[1:len(edges)]  # the reference bins, without under/overflow and nulls
        if inner.sum():
            middles = (edges[:-1] + edges[1:]) / 2
            found[f"{key}.mean"] = float(np.average(middles, weights=inner))
        for rank, value in quantiles.items():
            found[f"{key}.p{round(float(rank) * 100)}"] = value
    return found


def _store(monitor: Monitor, deployment: str) -> RecordStore | None:
    writer = monitor.writers.get(deployment)
    if writer is None:
        return None
    writer.flush()
    return writer.sink if isinstance(writer.sink, RecordStore) else None


def _labelled(monitor: Monitor, store: RecordStore | None, deployment: str,
              since: float) -> dict[tuple[str, str], dict[str, float | None]]:
    if store is None:
        return {}
    from shipyard.monitoring.performance import cell_figures, performance

    try:
        config = monitor.config_of(deployment)
        report = performance(store, deployment, since=_at(since), slices=config.slices,
                             schema_of=monitor.schema_of).to_json()
    except Exception:
        log.exception("performance of %s could not be read", deployment)
        return {}
    found: dict[tuple[str, str], dict[str, float | None]] = {}
    by_version = {(m.model.name, m.key[2]): m.key[1] for m in monitor.for_deployment(deployment)}
    for cell in report.get("cells", []):
        variant = by_version.get((cell["model"], cell["version"]))
        if variant is None:
            continue
        found.setdefault((variant, cell["version"]), {}).update(cell_figures(cell))
    return found


def _records(store: RecordStore | None, deployment: str, since: float) -> pd.DataFrame:
    if store is None:
        return pd.DataFrame()
    try:
        return store.records(deployment, _at(since), None)
    except Exception:
        log.exception("records of %s could not be read", deployment)
        return pd.DataFrame()


def _feedback(store: RecordStore | None, deployment: str, since: float) -> pd.DataFrame:
    if store is None:
        return pd.DataFrame()
    try:
        return store.feedback(deployment, _at(since), None)
    except Exception:
        log.exception("feedback of %s could not be read", deployment)
        return pd.DataFrame()


def outcomes(records: pd.DataFrame, feedback: pd.DataFrame, variant: str,
              version: str) -> dict[str, Outcome]:
    """Feedback per arm: thumbs (as 1/0), score, and label_correct (1 when the prediction
    matched the label), for peeking-safe A/B comparisons."""
    if records.empty or feedback.empty:
        return {}
    mine = records[(records["variant"] == variant) & (records["version"] == version)]
    joined = feedback.merge(mine.drop_duplicates("request_id"), on="request_id",
                            suffixes=("", "_record"))
    if joined.empty:
        return {}
    found: dict[str, Outcome] = {}
    if "thumbs" in joined:
        thumbs = [float(v) for v in joined["thumbs"].dropna()]
        found["thumbs"] = Outcome.from_values(thumbs)
    if "score" in joined:
        found["score"] = Outcome.from_values([float(v) for v in joined["score"].dropna()])
    predicted = _prediction_column(joined)
    if predicted is not None and "label" in joined:
        rows = joined[joined["label"].notna()]
        found["label_correct"] = Outcome.from_values(
            [1.0 if _same(p, y) else 0.0 for p, y in zip(rows[predicted], rows["label"],
                                                          strict=True)]
        )
    return found


def _paired(monitor: Monitor, records: pd.DataFrame, feedback: pd.DataFrame,
            deployment: str, champion: tuple[str, str], candidate: str) -> Paired:
    """Agreement from the monitor; McNemar's discordant cells from labelled record pairs
    (the champion's record under the request id, the shadow's under `id~variant`)."""
    stats = monitor.paired_of(deployment).get(candidate)
    n = int(stats["n"]) if stats else 0
    agree = int(stats["agree"]) if stats else 0
    diffs = None
    if stats and stats.get("diffs"):
        d = stats["diffs"]
        diffs = {"mean": d["mean"], "std": d["std"], "p50": d["p50_abs"], "p99": d["p99_abs"]}
    labelled_n = champion_only = challenger_only = 0
    predicted = _prediction_column(records) if not records.empty else None
    if predicted is not None and not feedback.empty and "label" in feedback:
        labels = feedback[feedback["label"].notna()].drop_duplicates("request_id")
        first = records[records["variant"] == champion[0]].drop_duplicates("request_id")
        second = records[records["variant"] == candidate].copy()
        second["request_id"] = second["request_id"].str.rsplit("~", n=1).str[0]
        pairs = first.merge(second.drop_duplicates("request_id"), on="request_id",
                            suffixes=("_a", "_b")).merge(labels, on="request_id")
        for a, b, y in zip(pairs[f"{predicted}_a"], pairs[f"{predicted}_b"], pairs["label"],
                           strict=True):
            labelled_n += 1
            right_a, right_b = _same(a, y), _same(b, y)
            champion_only += right_a and not right_b
            challenger_only += right_b and not right_a
    labelled_n = min(labelled_n, n) if n else 0
    if not labelled_n:
        champion_only = challenger_only = 0
    return Paired(n=n, agree=min(agree, n), confusion=(stats or {}).get("confusion"),
                  diffs=diffs, labelled_n=labelled_n, champion_only_correct=champion_only,
                  challenger_only_correct=challenger_only)


def _prediction_column(frame: pd.DataFrame) -> str | None:
    outputs = [c for c in frame.columns if c.startswith("output.") and "probabilit" not in c]
    return outputs[0] if outputs else None


def _same(predicted: Any, label: Any) -> bool:
    if isinstance(predicted, list | tuple) and len(predicted) == 1:
        predicted = predicted[0]
    try:
        return bool(float(predicted) == float(label))
    except (TypeError, ValueError):
        return str(predicted) == str(label)


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
