"""Reference profiles: the distribution of every input field and output on the eval data.

Numeric fields keep summary statistics, quantiles and a 20-bin histogram; categorical fields
keep value frequencies (top 100, the rest under `__other__`); string fields are profiled by
their length. Tensor fields with up to `MAX_ELEMENTS` elements are profiled per element as
`name[i]`; larger ones (embeddings, images) as one flattened distribution under `name`.
Monitoring later compares live windows against these.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from shipyard.bundle.manifest import (
    CategoricalProfile,
    FieldProfile,
    FieldSpec,
    NumericProfile,
    Profile,
    Schema,
)

BINS = 20
TOP_CATEGORIES = 100
MAX_ELEMENTS = 64
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
# A classifier's confidence per row, profiled beside its `probabilities` output.
CONFIDENCE_KEYS = ("confidence.top", "confidence.margin")


def numeric_profile(values: np.ndarray) -> NumericProfile:
    flat = np.asarray(values, dtype=np.float64).ravel()
    mask = np.isnan(flat)
    finite = flat[~mask & np.isfinite(flat)]
    if finite.size == 0:
        return NumericProfile(count=0, nulls=int(mask.sum()))
    low, high = float(finite.min()), float(finite.max())
    if low == high:
        edges = np.array([low - 0.5, high + 0.5])
    else:
        edges = np.linspace(low, high, BINS + 1)
    counts, edges = np.histogram(finite, bins=edges)
    quantiles = np.quantile(finite, QUANTILES)
    return NumericProfile(
        count=int(finite.size),
        nulls=int(mask.sum()),
        min=low,
        max=high,
        mean=float(finite.mean()),
        std=float(finite.std()),
        quantiles={f"{q:g}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
        edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
    )


def categorical_profile(values: Any) -> CategoricalProfile:
    series = pd.Series(list(values), dtype=object)
    nulls = int(series.isna().sum())
    counter = Counter(str(v) for v in series.dropna())
    top = dict(counter.most_common(TOP_CATEGORIES))
    rest = sum(counter.values()) - sum(top.values())
    if rest:
        top["__other__"] = rest
    return CategoricalProfile(count=int(len(series) - nulls), nulls=nulls, frequencies=top)


def field_profiles(spec: FieldSpec, values: Any) -> dict[str, FieldProfile]:
    """Profiles for one field; tensor fields give one entry per element or one flattened."""
    if spec.dtype == "category" or spec.dtype == "bool":
        return {spec.name: categorical_profile(np.asarray(values).ravel())}
    if spec.dtype == "string":
        lengths = np.array([np.nan if v is None else len(str(v)) for v in values], dtype=float)
        return {spec.name: numeric_profile(lengths)}
    array = np.asarray(values, dtype=np.float64)
    elements = int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
    if array.ndim <= 1 or elements == 1:
        return {spec.name: numeric_profile(array)}
    if elements <= MAX_ELEMENTS:
        flat = array.reshape(len(array), -1)
        return {f"{spec.name}[{i}]": numeric_profile(flat[:, i]) for i in range(elements)}
    return {spec.name: numeric_profile(array)}


def expected_keys(spec: FieldSpec) -> list[str]:
    """The profile keys a field must have (used by the completeness check)."""
    elements = int(np.prod(spec.shape)) if spec.shape else 1
    if spec.dtype in ("category", "bool", "string") or elements == 1 or elements > MAX_ELEMENTS:
        return [spec.name]
    return [f"{spec.name}[{i}]" for i in range(elements)]


def build_profile(schema: Schema, batch: Any, outputs: Mapping[str, np.ndarray]) -> Profile:
    """Profile a validated batch (in the model's layout) and the model's outputs on it."""
    inputs: dict[str, FieldProfile] = {}
    if schema.layout == "frame":
        for spec in schema.inputs:
            inputs.update(field_profiles(spec, batch[spec.name].to_numpy()))
        rows = len(batch)
    else:
        inputs.update(field_profiles(schema.inputs[0], batch))
        rows = len(batch)
    output_profiles: dict[str, FieldProfile] = {}
    for spec in schema.outputs:
        if spec.name in outputs:
            output_profiles.update(field_profiles(spec, outputs[spec.name]))
    if "probabilities" in outputs:
        for key, values in confidence_columns(outputs["probabilities"]).items():
            output_profiles[key] = numeric_profile(values)
    return Profile(rows=rows, inputs=inputs, outputs=output_profiles)


def confidence_columns(probabilities: Any) -> dict[str, np.ndarray]:
    """Top probability and margin (top minus runner-up) per row."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size == 0:
        empty = np.empty(0, dtype=np.float64)
        return {CONFIDENCE_KEYS[0]: empty, CONFIDENCE_KEYS[1]: empty}
    if p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1):
        p = p.reshape(-1, 1)
        p = np.hstack([1.0 - p, p])  # one column: the positive class of a binary classifier
    p = p.reshape(len(p), -1)
    ordered = np.partition(p, p.shape[1] - 2, axis=1) if p.shape[1] > 1 else p
    top = ordered[:, -1]
    second = ordered[:, -2] if p.shape[1] > 1 else np.zeros(len(p))
    return {CONFIDENCE_KEYS[0]: top, CONFIDENCE_KEYS[1]: top - second}
