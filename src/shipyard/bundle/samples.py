"""Example rows that satisfy a bundle's input schema.

Used to check that a model accepts its own schema, to warm a model before it takes traffic,
and as examples in the OpenAPI document. Numeric values sit at the reference profile's
median where there is one, so the rows look like real data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from shipyard.bundle.manifest import Manifest, Schema


def example_rows_for_schema(schema: Schema, rows: int = 3) -> Any:
    """Rows that satisfy a schema, for checking that the model accepts it."""
    if schema.layout == "text":
        return ["an example sentence"] * rows
    columns: dict[str, Any] = {}
    for spec in schema.inputs:
        if spec.categories:
            columns[spec.name] = [spec.categories[0]] * rows
        elif spec.dtype in ("string", "category"):
            columns[spec.name] = ["example"] * rows
        elif spec.dtype == "bool":
            columns[spec.name] = [True] * rows
        else:
            low = spec.minimum if spec.minimum is not None else 0.0
            high = spec.maximum if spec.maximum is not None else low + 1.0
            shape = [max(d, 1) for d in spec.shape]
            value = np.full((rows, *shape), (low + high) / 2)
            if spec.dtype.startswith("int"):
                value = np.round(value)
            columns[spec.name] = value.astype(spec.dtype)
    if schema.layout == "array":
        return columns[schema.inputs[0].name]
    return pd.DataFrame({k: list(v) if np.ndim(v) > 1 else v for k, v in columns.items()})


def example_rows(manifest: Manifest) -> Any:
    """Synthetic rows at the reference profile's medians, falling back to the schema."""
    schema = manifest.schema_ or Schema()
    rows = example_rows_for_schema(schema)
    profile = manifest.profile
    if profile is None or schema.layout == "text":
        return rows
    if schema.layout == "array":
        spec = schema.inputs[0]
        medians = [profile.inputs.get(f"{spec.name}[{i}]") for i in range(rows.shape[1])]
        if rows.ndim == 2 and all(
            m is not None and m.kind == "numeric" and "0.5" in m.quantiles for m in medians
        ):
            row = np.array([m.quantiles["0.5"] for m in medians])  # type: ignore[union-attr]
            rows = np.tile(row, (len(rows), 1)).astype(rows.dtype)
        return rows
    for spec in schema.inputs:
        entry = profile.inputs.get(spec.name)
        numeric = spec.dtype not in ("string", "category", "bool") and not spec.shape
        if numeric and entry is not None and entry.kind == "numeric" and "0.5" in entry.quantiles:
            value = entry.quantiles["0.5"]
            rows[spec.name] = np.full(
                len(rows), round(value) if spec.dtype.startswith("int") else value
            ).astype(spec.dtype)
    return rows
