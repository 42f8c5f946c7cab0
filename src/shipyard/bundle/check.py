"""The completeness check: every missing or inconsistent item of a bundle, as findings.

A bundle is *fragile* when any finding has severity "error"; `shipyard push` refuses a fragile
bundle unless told `--allow-fragile`. Codes are stable and documented in docs/checks.md.
Checks that need the model loaded (does it accept its own schema?) run one floor up, in
`shipyard.api`, and add their findings to these.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from shipyard.bundle import files
from shipyard.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
from shipyard.bundle.profile import CONFIDENCE_KEYS, expected_keys
from shipyard.bundle.scan import check_artifact
from shipyard.errors import ShipyardError
from shipyard.security.pii import DESCRIPTIONS
from shipyard.security.pii import find as find_pii

Severity = Literal["error", "warning", "info"]
EXACT_PIN = re.compile(r"^===?[A-Za-z0-9][A-Za-z0-9.+!_-]*$")


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    message: str
    hint: str = ""
    where: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CODES: dict[str, tuple[Severity, str]] = {
    "manifest-invalid": ("error", "shipyard.yaml is missing or invalid"),
    "files-invalid": ("error", "a file is missing, extra, or escapes the bundle"),
    "hash-mismatch": ("error", "a file's sha256 differs from the manifest"),
    "unsafe-artifact": ("error", "an artifact reaches code outside the pickle allowlist"),
    "secret-in-bundle": ("error", "a bundle file holds what looks like a secret"),
    "critical-vulnerability": ("error", "a pinned dependency has a known critical vulnerability"),
    "known-vulnerability": ("warning", "a pinned dependency has a known vulnerability"),
    "audit-incomplete": ("warning", "the dependency audit could not tell"),
    "missing-owner": ("error", "no owner who answers for the model"),
    "missing-evaluation": ("error", "no evaluation report"),
    "missing-metrics": ("error", "the evaluation report has no metrics"),
    "metric-below-threshold": ("error", "a metric misses its own threshold"),
    "missing-schema": ("error", "no input or output schema"),
    "missing-dependencies": ("error", "runtime dependencies are not declared"),
    "unpinned-dependency": ("error", "a dependency is not pinned to one exact version"),
    "missing-profile": ("error", "no reference profile, so drift cannot be measured"),
    "profile-mismatch": ("error", "the reference profile does not match the schema"),
    "schema-rejected": ("error", "the model does not accept its own input schema"),
    "output-mismatch": ("error", "the model's outputs do not match the output schema"),
    "load-failed": ("error", "the model could not be loaded"),
    "no-thresholds": ("warning", "no metric has a threshold to meet"),
    "missing-description": ("warning", "no description"),
    "missing-tokenizer": ("warning", "a text model declares no tokenizer or features"),
    "unsigned": ("info", "the manifest is not signed"),
}


def finding(code: str, message: str, hint: str = "", where: str = "") -> Finding:
    severity, _ = CODES[code]
    return Finding(code=code, severity=severity, message=message, hint=hint, where=where)


def is_fragile(findings: list[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def check_files(folder: Path, manifest: Manifest) -> list[Finding]:
    try:
        files.verify(folder, manifest)
    except ShipyardError as exc:
        code = "hash-mismatch" if exc.code == "integrity" else "files-invalid"
        return [finding(code, exc.message, exc.hint, str(exc.details.get("file", "")))]
    found = []
    for entry in manifest.artifacts:
        try:
            check_artifact(files.resolve_inside(folder, entry.path))
        except ShipyardError as exc:
            found.append(finding("unsafe-artifact", exc.message, exc.hint, entry.path))
    return found


SNIFF_BYTES = 8192  # a NUL byte in the first 8 KiB marks a binary file (weights, archives)
SCAN_CHARS = 1 << 20  # files are scanned in windows of 1 Mi characters ...
SCAN_OVERLAP = 32 * 1024  # ... overlapping by more than the longest secret (a PEM block)
MAX_SECRET_FINDINGS = 5  # per file; the rest are counted in one more finding


def check_secrets(folder: Path, manifest: Manifest) -> list[Finding]:
    """A `secret-in-bundle` finding for each text file line that holds what looks like a
    secret (security.pii's secret detectors); the message names the file, the line and the
    kind of secret, never the secret."""
    found: list[Finding] = []
    for relative in [MANIFEST_NAME, *(entry.path for entry in manifest.all_files())]:
        try:
            path = files.resolve_inside(folder, relative)
            hits = _secret_lines(path) if path.is_file() else []
        except (ShipyardError, OSError):
            continue  # an escaping or unreadable file is reported by check_files
        for line, detector in hits[:MAX_SECRET_FINDINGS]:
            found.append(
                finding(
                    "secret-in-bundle",
                    f"{relative}, line {line}, holds what looks like "
                    f"{DESCRIPTIONS.get(detector, 'a secret')}.",
                    "Remove it from the bundle and rotate it; refer to it as ${secret:NAME} "
                    "and supply it at run time (environment or /run/secrets).",
                    f"{relative}:{line}",
                )
            )
        if len(hits) > MAX_SECRET_FINDINGS:
            found.append(
                finding(
                    "secret-in-bundle",
                    f"{relative} holds {len(hits) - MAX_SECRET_FINDINGS} more lines that "
                    "look like secrets.",
                    "Remove every secret from the file; refer to them as ${secret:NAME}.",
                    relative,
                )
            )
    return found


def _secret_lines(path: Path) -> list[tuple[int, str]]:
    """(line, detector) of each secret in a text file; [] for a binary one. Reads in
    overlapping windows, so memory stays bounded however large the file."""
    with open(path, "rb") as handle:
        if b"\0" in handle.read(SNIFF_BYTES):
            return []
    hits: dict[int, str] = {}
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        window = ""
        lines_before = 0  # newlines before the window's first character
        while True:
            chunk = handle.read(SCAN_CHARS)
            window += chunk
            final = not chunk
            # A secret starting in the last SCAN_OVERLAP characters is left to the next window.
            limit = len(window) if final else max(len(window) - SCAN_OVERLAP, 0)
            line, counted = lines_before, 0
            for item in find_pii(window, kinds=("secret",)):
                if item.start >= limit:
                    break
                line += window.count("\n", counted, item.start)
                counted = item.start
                hits.setdefault(line + 1, item.detector)
            if final:
                return sorted(hits.items())
            lines_before += window.count("\n", 0, limit)
            window = window[limit:]


def check_manifest(manifest: Manifest, folder: Path | None = None) -> list[Finding]:
    found: list[Finding] = []
    if manifest.owner is None:
        found.append(
            finding(
                "missing-owner",
                "The bundle names no owner.",
                "Set owner: 'Name <contact>' in shipyard.yaml.",
                "owner",
            )
        )
    if not manifest.description.strip():
        found.append(
            finding(
                "missing-description",
                "The bundle has no description.",
                "Say in one sentence what the model predicts.",
                "description",
            )
        )
    found += _check_evaluation(manifest)
    found += _check_schema_and_profile(manifest)
    found += _check_dependencies(manifest)
    if folder is not None and not (folder / SIGNATURE_NAME).is_file():
        found.append(
            finding(
                "unsigned",
                "The manifest is not signed.",
                "Sign it with `shipyard sign BUNDLE --key KEY.pem`.",
                SIGNATURE_NAME,
            )
        )
    return found


def _check_evaluation(manifest: Manifest) -> list[Finding]:
    evaluation = manifest.evaluation
    if evaluation is None:
        return [
            finding(
                "missing-evaluation",
                "The bundle has no evaluation report.",
                "Pass eval_data=(X, y) to shipyard.package, or "
                "`shipyard package FOLDER --data FILE --target COLUMN`.",
                "evaluation",
            )
        ]
    if not evaluation.metrics:
        return [
            finding(
                "missing-metrics",
                "The evaluation report lists no metrics.",
                "Measure at least one metric on held-out data.",
                "evaluation.metrics",
            )
        ]
    found = []
    for metric in evaluation.metrics:
        if math.isnan(metric.value) or not metric.passes:
            word = ">=" if metric.higher_is_better else "<="
            found.append(
                finding(
                    "metric-below-threshold",
                    f"Metric {metric.name} is {metric.value:.4g}; its threshold is "
                    f"{word} {metric.threshold:g}.",
                    "Improve the model, or justify and change the threshold.",
                    f"evaluation.metrics.{metric.name}",
                )
            )
    if all(m.threshold is None for m in evaluation.metrics):
        found.append(
            finding(
                "no-thresholds",
                "No metric has a threshold.",
                "Pass thresholds={'accuracy': 0.9} so a regression is caught.",
                "evaluation.metrics",
            )
        )
    return found


def _check_schema_and_profile(manifest: Manifest) -> list[Finding]:
    schema = manifest.schema_
    if schema is None or not schema.inputs or not schema.outputs:
        missing = "input" if schema is None or not schema.inputs else "output"
        return [
            finding(
                "missing-schema",
                f"The bundle declares no {missing} schema.",
                "Pass sample= to shipyard.package, or run `shipyard package FOLDER`.",
                "schema",
            )
        ]
    found = []
    if schema.layout == "text" and (
        manifest.features is None
        or (not manifest.features.tokenizer and not manifest.features.definitions)
    ):
        found.append(
            finding(
                "missing-tokenizer",
                "A text model declares no tokenizer.",
                "Set features.tokenizer to the tokenizer files' folder.",
                "features",
            )
        )
    profile = manifest.profile
    if profile is None:
        found.append(
            finding(
                "missing-profile",
                "The bundle has no reference profile.",
                "Pass eval_data= to shipyard.package so the profile is computed.",
                "profile",
            )
        )
        return found
    for section, specs, profiles in (
        ("inputs", schema.inputs, profile.inputs),
        ("outputs", schema.outputs, profile.outputs),
    ):
        wanted = {key for spec in specs for key in expected_keys(spec)}
        absent = sorted(wanted - set(profiles))
        # Confidence is profiled beside probabilities; bundles made before it lack it.
        extra = sorted(set(profiles) - wanted - set(CONFIDENCE_KEYS))
        if absent or extra:
            parts = ([f"missing {', '.join(absent[:5])}"] if absent else []) + (
                [f"unknown {', '.join(extra[:5])}"] if extra else []
            )
            found.append(
                finding(
                    "profile-mismatch",
                    f"The reference profile's {section} do not match the schema: "
                    + "; ".join(parts)
                    + ".",
                    "Recompute the profile: `shipyard package FOLDER --data FILE`.",
                    f"profile.{section}",
                )
            )
    return found


def _check_dependencies(manifest: Manifest) -> list[Finding]:
    deps = manifest.dependencies
    if deps is None or not deps.packages:
        return [
            finding(
                "missing-dependencies",
                "The bundle pins no runtime dependencies.",
                "Run `shipyard package FOLDER` to capture them from the environment.",
                "dependencies",
            )
        ]
    return [
        finding(
            "unpinned-dependency",
            f"Dependency {name} is {spec!r}, not one exact version.",
            f"Pin it: {name}==<version>.",
            f"dependencies.packages.{name}",
        )
        for name, spec in sorted(deps.packages.items())
        if not EXACT_PIN.match(spec.replace(" ", ""))
    ]


def static_findings(folder: Path) -> tuple[Manifest | None, list[Finding]]:
    """Every check that needs only the files; the manifest is None when it cannot be read."""
    try:
        manifest = Manifest.read(folder)
    except ShipyardError as exc:
        return None, [finding("manifest-invalid", exc.message, exc.hint, "shipyard.yaml")]
    return manifest, (
        check_files(folder, manifest)
        + check_secrets(folder, manifest)
        + check_manifest(manifest, folder)
    )
