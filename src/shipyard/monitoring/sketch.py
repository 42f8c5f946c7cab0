"""Streaming sketches of live traffic, binned exactly like the bundle's reference profile.

`ReferenceBins` turns a reference `Profile` into a fixed bin layout per profile key:

- numeric keys: `[underflow, reference bins..., overflow, null]`. The reference edges cover
  [min, max] of the evaluation data, so the reference itself has 0 in underflow and overflow;
  live values outside the old range land there. NaN goes to `null`; -inf/+inf to the
  underflow/overflow bins. A key whose reference had no value at all (all NaN) keeps
  `[values, null]`.
- categorical keys: `[categories..., __other__, __unseen__, null]`. A live value missing from
  the reference's top-100 list goes to `__other__` when the reference had a tail there (the
  value may well be part of it), otherwise to `__unseen__`.

`WindowSketch` counts one window of traffic (one per variant per time bucket) into that
layout, fully vectorised (np.searchsorted + np.bincount per column), and keeps a KLL quantile
sketch (Apache DataSketches, mergeable) per numeric key for live quantiles. Sketches of the same
reference merge by adding counts, so sliding windows are merges of small tumbling buckets.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd
from datasketches import kll_doubles_sketch

from shipyard.bundle.manifest import CategoricalProfile, FieldSpec, Profile, Schema
from shipyard.bundle.profile import CONFIDENCE_KEYS, MAX_ELEMENTS, confidence_columns
from shipyard.errors import ConflictError, SchemaError

SKETCH_FORMAT = 1
KLL_K = 200  # normalised rank error about 1.3%: plenty for dashboards, ~5 kB per key
OTHER, UNSEEN, NULL = "__other__", "__unseen__", "__null__"
# Confidence lies in [0, 1]; without a reference it is still binned, on fixed edges.
CONFIDENCE_EDGES = tuple(float(e) for e in np.linspace(0.0, 1.0, 21))

Role = Literal["input", "output"]
Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class FieldBins:
    """The bin layout of one profile key and the reference counts in it (None: no reference)."""

    key: str
    role: Role
    kind: Kind
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    reference: tuple[int, ...] | None = None

    @property
    def size(self) -> int:
        if self.kind == "categorical":
            return len(self.categories) + 3
        # E edges make E - 1 reference bins, plus underflow, overflow and null.
        return len(self.edges) + 2 if self.edges else 2

    def labels(self) -> list[str]:
        """Human-readable names of the bins, in order (for plots and the API)."""
        if self.kind == "categorical":
            return [*self.categories, OTHER, UNSEEN, NULL]
        if not self.edges:
            return ["values", NULL]
        e = self.edges
        inner = [f"[{e[i]:g}, {e[i + 1]:g})" for i in range(len(e) - 1)]
        inner[-1] = inner[-1][:-1] + "]"  # the last reference bin is closed, as in np.histogram
        return [f"(-inf, {e[0]:g})", *inner, f"({e[-1]:g}, inf)", NULL]


@dataclass(frozen=True)
class ReferenceBins:
    """Every key's bin layout, built once per model version from its reference profile."""

    fields: dict[str, FieldBins]
    rows: int

    @classmethod
    def from_profile(cls, profile: Profile) -> ReferenceBins:
        fields: dict[str, FieldBins] = {}
        for key, prof in profile.inputs.items():
            fields[key] = _field_bins(key, "input", prof)
        for key, prof in profile.outputs.items():
            name = output_key(key, profile.inputs)
            fields[name] = _field_bins(name, "output", prof)
        if any(_is_probability(k) for k in profile.outputs):
            for name in CONFIDENCE_KEYS:
                # Bundles packaged before confidence was profiled: fixed bins, no reference.
                fields.setdefault(
                    name, FieldBins(name, "output", "numeric", edges=CONFIDENCE_EDGES)
                )
        return cls(fields=fields, rows=profile.rows)

    @cached_property
    def fingerprint(self) -> str:
        """Identifies the layout (not the counts): sketches merge only with equal fingerprints."""
        layout = [[f.key, f.kind, list(f.edges), list(f.categories)] for f in self.fields.values()]
        text = json.dumps(layout, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _field_bins(key: str, role: Role, prof: Any) -> FieldBins:
    if isinstance(prof, CategoricalProfile):
        categories = tuple(c for c in prof.frequencies if c != OTHER)
        counts = [prof.frequencies[c] for c in categories]
        counts += [prof.frequencies.get(OTHER, 0), 0, prof.nulls]
        return FieldBins(key, role, "categorical", categories=categories, reference=tuple(counts))
    if not prof.edges:
        return FieldBins(key, role, "numeric", reference=(prof.count, prof.nulls))
    return FieldBins(
        key, role, "numeric", edges=tuple(prof.edges),
        reference=(0, *prof.counts, 0, prof.nulls),
    )


def output_key(key: str, input_keys: Iterable[str]) -> str:
    """An output's key; `output.<key>` only when an input has the same key."""
    return f"output.{key}" if key in set(input_keys) else key


def _is_probability(key: str) -> bool:
    return key == "probabilities" or key.startswith("probabilities[")


# -- binning ------------------------------------------------------------------------------------


def _numeric(values: Any, key: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype == np.float64:
        # A column of a row-major frame is strided: one copy makes the next five passes
        # (NaN count, searchsorted, max test, finite test, KLL) read memory sequentially.
        return np.ascontiguousarray(array).ravel()
    try:  # None becomes NaN; a non-number cannot be binned against numeric edges
        return np.asarray(array, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise SchemaError(
            f"Got non-numeric values for numeric field {key!r} ({exc}).",
            hint="Send numbers (or null) for this field, as its reference profile has.",
            field=key,
        ) from exc


def numeric_counts(field: FieldBins, values: np.ndarray, nulls: int | None = None) -> np.ndarray:
    """Counts of `values` (float, 1-D) in the field's layout; vectorised, one pass per step.

    `nulls` is the NaN count when the caller knows it already (it saves a pass).
    """
    if nulls is None:
        nulls = int(np.count_nonzero(np.isnan(values)))
    if not field.edges:
        return np.array([values.size - nulls, nulls], dtype=np.int64)
    edges = np.asarray(field.edges)
    last = len(edges)  # index of the overflow bin
    # side="right" makes bins [e_i, e_i+1); NaN sorts to the end, so it lands in overflow.
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=last + 2)
    # np.histogram closes the last reference bin: a value equal to max belongs inside it.
    top = int(np.count_nonzero(values == edges[-1]))
    counts[last] -= nulls + top
    counts[last - 1] += top
    counts[last + 1] = nulls
    return counts.astype(np.int64, copy=False)


def categorical_counts(field: FieldBins, values: Any) -> np.ndarray:
    """Counts per category; hash-factorised, so str() runs once per distinct value, not per row."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object).ravel(), use_na_sentinel=True)
    index = {c: i for i, c in enumerate(field.categories)}
    other = len(field.categories)
    unknown = other if field.reference is not None and field.reference[other] > 0 else other + 1
    lookup = np.array([index.get(str(u), unknown) for u in uniques] + [other + 2], dtype=np.intp)
    # The NA sentinel -1 indexes the last lookup entry: the null bin.
    return np.bincount(lookup[codes], minlength=field.size).astype(np.int64, copy=False)


# -- the window sketch --------------------------------------------------------------------------


class WindowSketch:
    """Counts (and KLL quantile sketches) of one window of traffic against one reference."""

    def __init__(
        self,
        bins: ReferenceBins,
        *,
        start: float | None = None,
        end: float | None = None,
        quantiles: bool = True,
    ) -> None:
        self.bins = bins
        self.start, self.end = start, end
        self.rows = 0
        self.counts = {k: np.zeros(f.size, dtype=np.int64) for k, f in bins.fields.items()}
        self.kll: dict[str, Any] = {}
        if quantiles:
            self.kll = {
                k: kll_doubles_sketch(KLL_K)
                for k, f in bins.fields.items()
                if f.kind == "numeric"
            }

    def update(self, columns: Mapping[str, Any], rows: int | None = None) -> None:
        """Add a chunk: `columns` maps profile keys to arrays; unknown keys are ignored."""
        seen = 0
        for key, values in columns.items():
            field = self.bins.fields.get(key)
            if field is None:
                continue
            if field.kind == "categorical":
                counts = categorical_counts(field, values)
            else:
                array = _numeric(values, key)
                finite = np.isfinite(array)
                clean = bool(finite.all())  # the common case: no NaN, no inf
                counts = numeric_counts(field, array, 0 if clean else None)
                sketch = self.kll.get(key)
                if sketch is not None and array.size:
                    # KLL keeps finite values only, so its quantiles stay plain JSON numbers.
                    sketch.update(array if clean else array[finite])
            self.counts[key] += counts
            seen = max(seen, len(values) if np.ndim(values) else 0)
        self.rows += seen if rows is None else rows

    def merge(self, other: WindowSketch) -> WindowSketch:
        """A new sketch of both windows (counts add, KLL sketches merge); inputs unchanged."""
        return merge_all([self, other])

    def quantiles(self, key: str, ranks: Iterable[float]) -> dict[str, float] | None:
        """Live quantiles of a numeric key from its KLL sketch; None when it saw no value."""
        sketch = self.kll.get(key)
        if sketch is None or sketch.is_empty():
            return None
        ranks = list(ranks)
        return {f"{r:g}": float(v) for r, v in zip(ranks, sketch.get_quantiles(ranks), strict=True)}

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: counts per key, KLL sketches as base64 of their portable binary form."""
        fields: dict[str, Any] = {}
        for key, counts in self.counts.items():
            sketch = self.kll.get(key)
            fields[key] = {
                "counts": counts.tolist(),
                "kll": base64.b64encode(sketch.serialize()).decode() if sketch else None,
            }
        return {
            "format": SKETCH_FORMAT,
            "fingerprint": self.bins.fingerprint,
            "rows": self.rows,
            "start": self.start,
            "end": self.end,
            "fields": fields,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], bins: ReferenceBins) -> WindowSketch:
        """Rebuild a sketch saved by `to_json`, checking it belongs to `bins`."""
        try:
            fingerprint, fields, rows = data["fingerprint"], data["fields"], int(data["rows"])
            if data.get("format") != SKETCH_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {SKETCH_FORMAT}")
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(
                f"Got a malformed window sketch ({exc}).",
                hint="Pass the dict that WindowSketch.to_json() produced.",
            ) from exc
        if fingerprint != bins.fingerprint:
            raise ConflictError(
                "The sketch was taken against a different reference profile.",
                hint="Load it with the ReferenceBins of the model version that produced it.",
            )
        sketch = cls(bins, start=data.get("start"), end=data.get("end"), quantiles=False)
        sketch.rows = rows
        for key, field in bins.fields.items():
            saved = fields.get(key)
            if saved is None:
                continue
            counts = np.asarray(saved.get("counts", []), dtype=np.int64)
            if counts.shape != (field.size,) or (counts < 0).any():
                raise SchemaError(
                    f"Got {counts.size} counts for {key!r}; its layout has {field.size} bins.",
                    hint="Pass the dict that WindowSketch.to_json() produced.",
                    field=key,
                )
            sketch.counts[key] = counts
            if saved.get("kll"):
                sketch.kll[key] = kll_doubles_sketch.deserialize(base64.b64decode(saved["kll"]))
        return sketch


def merge_all(
    sketches: Sequence[WindowSketch], *, start: float | None = None, end: float | None = None,
    quantiles: bool = True,
) -> WindowSketch:
    """One sketch of all the windows (counts add, KLL sketches merge); inputs unchanged.

    One KLL sketch per key, not one per key per part as merging pairwise makes; without
    `quantiles`, counts only: the KLL merges are nearly all the cost (a 60-bucket window of
    35 keys: ~2,000 merges, 10-20 ms). `start` and `end` default to the parts' span."""
    first = sketches[0]
    if any(s.bins.fingerprint != first.bins.fingerprint for s in sketches):
        raise ConflictError(
            "Cannot merge sketches of different reference profiles.",
            hint="Merge only windows of the same model version.",
        )
    merged = WindowSketch(first.bins, quantiles=False)
    starts = [s.start for s in sketches if s.start is not None]
    ends = [s.end for s in sketches if s.end is not None]
    merged.start = start if start is not None else (min(starts) if starts else None)
    merged.end = end if end is not None else (max(ends) if ends else None)
    merged.rows = sum(s.rows for s in sketches)
    merged.counts = {k: np.sum([s.counts[k] for s in sketches], axis=0) for k in first.counts}
    for key in {k for s in sketches for k in s.kll} if quantiles else ():
        sketch = kll_doubles_sketch(KLL_K)
        for part in sketches:
            found = part.kll.get(key)
            if found is not None and not found.is_empty():
                sketch.merge(found)
        merged.kll[key] = sketch
    return merged


# -- served batches to columns ------------------------------------------------------------------


def sketch_columns(
    schema: Schema, batch: Any, outputs: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """A served batch (model layout) and its outputs as columns keyed like the profile.

    Mirrors `bundle.profile.field_profiles`: `x` or `x[i]` for small tensors, a flattened `x`
    for large ones, strings by length; outputs likewise, plus the classifier's confidence.
    """
    columns: dict[str, np.ndarray] = {}
    if schema.layout == "frame":
        for spec in schema.inputs:
            columns.update(_field_columns(spec, batch[spec.name].to_numpy()))
    elif schema.inputs:
        columns.update(_field_columns(schema.inputs[0], batch))
    input_keys = set(columns)
    for spec in schema.outputs:
        if spec.name in outputs:
            for key, values in _field_columns(spec, outputs[spec.name]).items():
                columns[output_key(key, input_keys)] = values
    if "probabilities" in outputs:
        columns.update(confidence_columns(outputs["probabilities"]))
    return columns


def _field_columns(spec: FieldSpec, values: Any) -> dict[str, np.ndarray]:
    if spec.dtype in ("category", "bool"):
        return {spec.name: np.asarray(values, dtype=object).ravel()}
    if spec.dtype == "string":
        lengths = [np.nan if v is None or v is pd.NA else len(str(v)) for v in values]
        return {spec.name: np.asarray(lengths, dtype=np.float64)}
    array = np.asarray(values)
    if array.dtype == object and array.size and isinstance(array.flat[0], list | np.ndarray):
        array = np.stack([np.asarray(v) for v in array])  # a frame column of tensors
    array = _numeric(array, spec.name).reshape(array.shape) if array.size else array
    elements = int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
    if array.ndim <= 1 or elements == 1:
        return {spec.name: array.ravel()}
    if elements <= MAX_ELEMENTS:
        flat = array.reshape(len(array), -1)
        return {f"{spec.name}[{i}]": flat[:, i] for i in range(elements)}
    return {spec.name: array.ravel()}
