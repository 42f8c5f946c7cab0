"""The library's front door: package, check, push and load models.

These functions compose the floors below (bundle, runtimes, registry) and are what the CLI
and notebooks call. Settings are built here, at the edge, when the caller passes none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipyard.bundle import build, evaluation
from shipyard.bundle.check import Finding, finding, is_fragile, static_findings
from shipyard.bundle.manifest import Code, Features, Manifest, Owner, RuntimeSpec, Schema
from shipyard.bundle.profile import build_profile
from shipyard.bundle.samples import example_rows, example_rows_for_schema
from shipyard.bundle.schema import check_outputs, infer_inputs, infer_outputs, to_batch
from shipyard.errors import BundleError, ManifestError, ShipyardError
from shipyard.registry.registry import PushResult, Registry
from shipyard.runtimes.base import Outputs, detect, get_runtime
from shipyard.runtimes.model import Model, load_bundle
from shipyard.settings import Settings

CORE_DISTRIBUTIONS = ("numpy", "pandas")


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else Settings.load()


def _evaluate(
    model: Model,
    eval_data: tuple[Any, Any],
    description: str,
    thresholds: Mapping[str, float] | None,
) -> tuple[Any, Outputs, Any]:
    X, y = eval_data
    batch = model.prepare(X)
    outputs = model.run(batch)
    if "label" in outputs:
        found = evaluation.classification_metrics(
            y, outputs["label"], outputs.get("probabilities"), model.classes
        )
    elif "prediction" in outputs and np.asarray(y).ndim == 1:
        found = evaluation.regression_metrics(y, outputs["prediction"])
    else:
        found = {}
    report = evaluation.report(found, data=description, rows=len(y), thresholds=thresholds)
    return batch, outputs, report


def package(
    model: Any,
    dest: str | Path,
    *,
    name: str,
    version: str,
    owner: str,
    sample: Any,
    eval_data: tuple[Any, Any] | None = None,
    eval_description: str = "held-out evaluation data",
    thresholds: Mapping[str, float] | None = None,
    description: str = "",
    runtime: str | None = None,
    features: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Package a trained model object into a bundle folder at `dest`, atomically.

    The runtime is detected from the model object, the input schema inferred from `sample`
    (a DataFrame, a 2-D array or a list of strings), the output schema from the model's own
    output on it. With `eval_data=(X, y)` the evaluation report and the reference profile are
    computed on that data (otherwise the profile uses `sample`).
    """
    manifest = Manifest.from_dict(
        {
            "name": name,
            "version": version,
            "owner": Owner.parse(owner).model_dump(),
            "description": description,
            "runtime": {"kind": "python"},
        },
        source="package()",
    )
    adapter = get_runtime(runtime) if runtime else detect(model)
    extra_rows = eval_data[0] if eval_data is not None else None
    schema = infer_inputs(sample, extra_rows)
    dest = Path(dest)
    with build.staging(dest, overwrite=overwrite) as tmp:
        saved = adapter.save(model, tmp, sample)
        distributions = build.distributions_for_modules(
            [klass.__module__ for klass in type(model).__mro__]
        )
        distributions.update(adapter.packages)
        distributions.update(CORE_DISTRIBUTIONS)
        manifest = manifest.model_copy(
            update={
                "runtime": RuntimeSpec(kind=adapter.kind, options=saved.options),
                "artifacts": build.file_entries(tmp, saved.files),
                "code": Code(files=build.file_entries(tmp, saved.code_files)),
                "schema_": schema,
                "features": Features(**features) if features else None,
                "dependencies": build.pinned_dependencies(distributions),
                "tags": dict(tags or {}),
                "created_at": datetime.now(UTC),
            }
        )
        build.write_manifest(tmp, manifest)
        loaded = load_bundle(tmp)
        _finish_from_data(tmp, loaded, sample, eval_data, eval_description, thresholds)
        loaded.close()
    return dest


def _finish_from_data(
    folder: Path,
    model: Model,
    sample: Any,
    eval_data: tuple[Any, Any] | None,
    eval_description: str,
    thresholds: Mapping[str, float] | None,
) -> Manifest:
    """Add the output schema, evaluation report and reference profile; rewrite the manifest."""
    manifest = model.manifest
    sample_batch = model.prepare(sample)
    sample_outputs = model.run(sample_batch)
    schema = (manifest.schema_ or Schema()).model_copy(
        update={"outputs": infer_outputs(sample_outputs, model.classes)}
    )
    model.schema = schema
    report = None
    if eval_data is not None:
        batch, outputs, report = _evaluate(model, eval_data, eval_description, thresholds)
    else:
        batch, outputs = sample_batch, sample_outputs
    manifest = manifest.model_copy(
        update={
            "schema_": schema,
            "evaluation": report if report is not None else manifest.evaluation,
            "profile": build_profile(schema, batch, outputs),
        }
    )
    build.write_manifest(folder, manifest)
    model.manifest = manifest
    return manifest


def finish(
    folder: str | Path,
    *,
    data: Any = None,
    target: str | None = None,
    thresholds: Mapping[str, float] | None = None,
    description: str = "evaluation data",
) -> Manifest:
    """Complete a hand-made bundle folder: hash files, pin dependencies, schema, profile.

    `data` is a DataFrame (or a CSV/Parquet path) of evaluation rows; `target` names its label
    column. The manifest is rewritten atomically; nothing else in the folder changes.
    """
    folder = Path(folder)
    raw = Manifest.read(folder)
    get_runtime(raw.runtime.kind)
    artifacts = build.list_files(folder, "model")
    code_files = build.list_files(folder, "code")
    for entry in raw.code.files:
        if entry.path not in code_files:
            raise BundleError(
                f"Code file {entry.path!r} is listed but missing.",
                hint="Restore it or remove it from shipyard.yaml.",
                file=entry.path,
            )
    distributions = set(CORE_DISTRIBUTIONS)
    distributions.update(get_runtime(raw.runtime.kind).packages)
    manifest = raw.model_copy(
        update={
            "artifacts": build.file_entries(folder, artifacts),
            "code": raw.code.model_copy(update={"files": build.file_entries(folder, code_files)}),
            "dependencies": raw.dependencies or build.pinned_dependencies(distributions),
            "created_at": raw.created_at or datetime.now(UTC),
        }
    )
    if manifest.schema_ is None or not manifest.schema_.inputs:
        raise ManifestError(
            "shipyard.yaml declares no input schema.",
            hint="List schema.inputs (name, dtype) in shipyard.yaml.",
            field="schema.inputs",
        )
    build.write_manifest(folder, manifest)
    model = load_bundle(folder)
    frame = _read_table(data) if data is not None else None
    eval_data = None
    sample: Any
    if frame is not None:
        if target is not None:
            if target not in frame.columns:
                raise ManifestError(
                    f"Column {target!r} is not in the data.",
                    hint=f"Columns are: {', '.join(map(str, frame.columns))}.",
                    field="target",
                )
            eval_data = (frame.drop(columns=[target]), frame[target].to_numpy())
            sample = eval_data[0]
        else:
            sample = frame
    else:
        sample = example_rows_for_schema(manifest.schema_)
    manifest = _finish_from_data(folder, model, sample, eval_data, description, thresholds)
    model.close()
    return manifest


def _read_table(data: Any) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    path = Path(data)
    if not path.is_file():
        raise ManifestError(
            f"Data file {str(path)!r} does not exist.",
            hint="Pass a CSV or Parquet file.",
            field="data",
        )
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:
        raise ManifestError(
            f"Cannot read {path.name}: {exc}.",
            hint="Pass a well-formed CSV or Parquet file.",
            field="data",
        ) from exc


def check(
    bundle: str | Path,
    *,
    trusted_keys: Sequence[Path] = (),
    audit_database: Path | None = None,
) -> list[Finding]:
    """Every missing or inconsistent item of a bundle folder, including loading checks and,
    with an OSV database, known vulnerabilities of its pinned dependencies."""
    folder = Path(bundle)
    manifest, findings = static_findings(folder)
    if audit_database is not None and manifest is not None:
        from shipyard.depaudit import audit_bundle, critical_findings

        findings = [*findings, *critical_findings(audit_bundle(folder, database=audit_database))]
    if manifest is None or is_fragile(
        [f for f in findings if f.code in ("files-invalid", "hash-mismatch", "unsafe-artifact")]
    ):
        return findings
    schema = manifest.schema_
    if schema is None or not schema.inputs:
        return findings
    try:
        model = load_bundle(folder, trusted_keys=trusted_keys)
    except ShipyardError as exc:
        return [*findings, finding("load-failed", exc.message, exc.hint, "runtime")]
    try:
        rows = example_rows(manifest)
        batch = to_batch(rows, schema)
        try:
            outputs = model.run(batch)
        except Exception as exc:  # noqa: BLE001 - the model's own code: any failure is a finding
            findings.append(
                finding(
                    "schema-rejected",
                    f"The model failed on rows that satisfy its input schema: "
                    f"{type(exc).__name__}: {str(exc)[:200]}.",
                    "Make the schema match what the model takes (names, dtypes, categories).",
                    "schema.inputs",
                )
            )
            return findings
        try:
            check_outputs(outputs, schema.outputs)
            unknown = sorted(set(outputs) - {s.name for s in schema.outputs})
            if unknown:
                raise ManifestError(f"The model returned undeclared outputs: {unknown}.")
        except ShipyardError as exc:
            findings.append(
                finding(
                    "output-mismatch",
                    exc.message,
                    "Re-run `shipyard package FOLDER` to rewrite the output schema.",
                    "schema.outputs",
                )
            )
    finally:
        model.close()
    return findings


def fragile_reasons(findings: Sequence[Finding]) -> list[str]:
    return [f"{f.code}: {f.message}" for f in findings if f.severity == "error"]


def push(
    bundle: str | Path,
    *,
    settings: Settings | None = None,
    allow_fragile: bool = False,
    actor: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PushResult:
    """Check a bundle and register it; refuse a fragile one unless `allow_fragile`."""
    settings = _settings(settings)
    findings = check(bundle, trusted_keys=settings.trusted_keys)
    registry = Registry.open(settings)
    try:
        return registry.push(
            Path(bundle),
            actor=actor,
            fragile_reasons=fragile_reasons(findings),
            allow_fragile=allow_fragile,
            progress=progress,
        )
    finally:
        registry.close()


def load(ref: str | Path, *, settings: Settings | None = None) -> Model:
    """A ready model from a bundle folder or a registry reference (NAME:VERSION, NAME@ALIAS)."""
    settings = _settings(settings)
    path = Path(ref)
    if isinstance(ref, Path) or path.is_dir() or "/" in str(ref) or str(ref).startswith("."):
        return load_bundle(path, trusted_keys=settings.trusted_keys)
    registry = Registry.open(settings)
    try:
        folder = registry.fetch(str(ref))
    finally:
        registry.close()
    return load_bundle(folder, trusted_keys=settings.trusted_keys)


def init(dest: str | Path, *, name: str, owner: str) -> Path:
    """Scaffold a bundle folder with custom loading, preprocessing and postprocessing code."""
    Owner.parse(owner)
    Manifest.from_dict(
        {"name": name, "version": "0.1.0", "runtime": {"kind": "python"}}, source="init"
    )
    return build.scaffold(Path(dest), name=name, owner=owner)


def pull(
    ref: str,
    dest: str | Path,
    *,
    settings: Settings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    registry = Registry.open(_settings(settings))
    try:
        return registry.pull(ref, Path(dest), progress=progress)
    finally:
        registry.close()
