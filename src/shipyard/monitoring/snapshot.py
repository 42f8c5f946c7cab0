"""One deployment's monitoring state as JSON: what `/ui` draws and `shipyard monitor` prints.

Per variant (model version): service figures and their time series, the latest drift per
field and its history, the distribution of every output against the reference profile, and
performance per slice where labels have arrived; plus the rollout state (configured and
observed traffic split) and the alerts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from shipyard.monitoring.monitor import ALERT_WINDOW_S, Monitor, VariantMonitor, compact

SERIES_S = 3600.0


def snapshot(monitor: Monitor, described: Mapping[str, Any], now: float) -> dict[str, Any]:
    """`described` is the served deployment as `GET /v1/deployments/NAME` shows it."""
    name = described["name"]
    monitors = monitor.for_deployment(name)
    try:
        performance = monitor.performance_of(name)
    except Exception:  # noqa: BLE001 - the page must render without the labels
        performance = None
    variants = [_variant(m, now, performance) for m in monitors]
    requests = {(v["variant"]): v["figures"].get("requests") or 0 for v in variants}
    total = sum(requests.values())
    routed = []
    for variant in described.get("variants", []):
        share = 100.0 * requests.get(variant["name"], 0) / total if total else None
        routed.append({**variant, "observed_share": None if share is None else round(share, 2)})
    alerts = [
        {
            "name": a["rule"] + (f" [{a['scope']['field']}]" if "field" in a["scope"] else ""),
            "variant": a["scope"].get("variant"),
            "model_version": a["scope"].get("model_version"),
            "state": a["state"],
            "value": a["value"],
            "since": a["since"],
            "severity": a["severity"],
        }
        for a in monitor.alerts_of(name)["active"]
    ]
    return {
        "deployment": name,
        "time": now,
        "rollout": {"revision": described.get("revision"), "variants": routed},
        "variants": variants,
        "alerts": alerts,
        "performance": performance,
        "paired": monitor.paired_of(name),
    }


def _variant(
    monitor: VariantMonitor, now: float, performance: Mapping[str, Any] | None
) -> dict[str, Any]:
    _, variant, version = monitor.key
    # Fresh, not the last scheduled evaluation: a person looking wants the window as it is.
    drift = monitor.report(now) or monitor.drift
    return {
        "variant": variant,
        "version": version,
        "model": monitor.model.name,
        "role": monitor.role,
        "figures": monitor.traffic.figures(now, ALERT_WINDOW_S),
        "traffic": monitor.traffic.series(now, SERIES_S),
        "drift": None if drift is None else {
            "status": drift.status,
            "rows": drift.rows,
            "drifted": drift.drifted,
            "fields": compact(drift),
        },
        "drift_history": list(monitor.drift_history),
        "predictions": _predictions(monitor, now),
        "performance": _slices(monitor, performance),
    }


def _predictions(monitor: VariantMonitor, now: float) -> list[dict[str, Any]]:
    """Each output's share per bin in the drift window against the reference's shares."""
    window = monitor.window(now)
    if window is None or monitor.reference is None:
        return []
    found = []
    for key, bins in monitor.reference.fields.items():
        if bins.role != "output":
            continue
        live = window.counts[key]
        reference = np.asarray(bins.reference if bins.reference is not None else
                               np.zeros_like(live), dtype=np.float64)
        found.append({
            "output": key,
            "kind": bins.kind,
            "labels": bins.labels(),
            "reference": _shares(reference),
            "live": _shares(live),
            "rows": int(live.sum()),
        })
    return found


def _shares(counts: np.ndarray) -> list[float]:
    total = float(np.sum(counts))
    return [round(float(c) / total, 5) if total else 0.0 for c in counts]


def _slices(monitor: VariantMonitor, performance: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    rows = []
    for cell in (performance or {}).get("cells", []):
        if cell["model"] != monitor.model.name or cell["version"] != monitor.key[2]:
            continue
        where = "all" if cell["slice"] is None else f"{cell['slice']}={cell['value']}"
        for metric, value in cell["metrics"].items():
            rows.append({"slice": where, "metric": metric, "value": value, "n": cell["n"]})
    return rows
