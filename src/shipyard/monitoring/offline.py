"""Reports over recorded predictions, without a server: what `shipyard drift` prints.

The server judges drift on its own sketches, per process. This reads the prediction records
that every worker wrote (database or Parquet), so it sees all of a deployment's traffic, and
compares each model version's rows with that version's reference profile.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from shipyard.bundle.manifest import Manifest, Schema
from shipyard.monitoring.drift import drift_frame
from shipyard.monitoring.monitor import compact
from shipyard.monitoring.recordstore import RecordStore, split_frame
from shipyard.registry.registry import Registry
from shipyard.routing import DeploymentSpec, MonitoringConfig


def drift_from_records(
    registry: Registry,
    deployment: str,
    *,
    window_s: float,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Drift of every (variant, model version) over the records of the last `window_s`."""
    spec = DeploymentSpec.parse(registry.current_revision(deployment).spec)
    config = spec.monitoring
    store = RecordStore.for_config(registry.database, config.records, registry.settings.home)
    until = until or datetime.now(UTC)
    since = until - timedelta(seconds=window_s)
    frame = store.records(deployment, since, until)
    variants = []
    if len(frame):
        for (variant, model, version), part in frame.groupby(
            ["variant", "model", "version"], sort=True
        ):
            manifest = Manifest.from_text(registry.resolve(f"{model}:{version}").manifest_yaml)
            variants.append({
                "variant": variant,
                "model": model,
                "model_version": version,
                "rows": len(part),
                **_judge(manifest, part, config),
            })
    return {
        "deployment": deployment,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "window_s": window_s,
        "rows": len(frame),
        "variants": variants,
    }


def _judge(manifest: Manifest, part: pd.DataFrame, config: MonitoringConfig) -> dict[str, Any]:
    schema = manifest.schema_
    if manifest.profile is None or schema is None:
        return {"status": "no_reference", "drifted": [], "fields": {},
                "reason": "the bundle has no reference profile (package it with eval data)"}
    _, inputs, outputs = split_frame(part)
    hidden = [f.name for f in schema.inputs
              if config.records.redact.get(f.name, config.records.default_policy) != "keep"]
    batch = _model_batch(schema, inputs, hidden)
    report = drift_frame(
        manifest.profile, batch, config.drift, schema=schema,
        outputs={name: _stack(outputs[name]) for name in outputs.columns},
    )
    fields = compact(report)
    # A redacted field was never stored as it was: it is not judged, and says so.
    for name in hidden:
        for key in [k for k in fields if k == name or k.startswith(f"{name}[")]:
            fields[key] = {**fields[key], "drifted": False, "psi": None, "js": None,
                           "ks": None, "cramers_v": None,
                           "reason": "not judged: the field is redacted in the records"}
    drifted = [k for k, f in fields.items() if f["drifted"]]
    status = report.status if report.status == "insufficient_data" else (
        "drift" if drifted else "ok")
    return {"status": status, "drifted": drifted, "fields": fields}


def _model_batch(schema: Schema, inputs: pd.DataFrame, hidden: list[str]) -> Any:
    """Recorded inputs back in the model's layout; redacted fields as missing values."""
    if schema.layout == "frame":
        batch = inputs.reindex(columns=[f.name for f in schema.inputs])
        for spec in schema.inputs:
            if spec.name in hidden:
                batch[spec.name] = None if spec.dtype in ("category", "string") else np.nan
        return batch
    name = schema.inputs[0].name
    if name in hidden or name not in inputs:
        return np.full((len(inputs), 1), np.nan)
    return _stack(inputs[name])


def _stack(column: pd.Series) -> np.ndarray:
    values = column.to_numpy()
    if values.dtype == object and len(values) and isinstance(values[0], list | np.ndarray):
        return np.stack([np.asarray(v, dtype=np.float64) for v in values])
    return values
