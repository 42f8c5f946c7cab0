"""`audit_bundle`: a bundle's pinned dependencies against an OSV database, as a report.

The report's status is "clean" only when every pinned package was looked up in a database
that was read in full. Anything less is "unknown" (exit code 2) with the reasons in
`problems`: a missing, corrupt, empty or stale database, an unreachable API, a bundle that
pins nothing, a dependency that is not pinned to one PEP 440 version. pip-audit on a closed
network reports "No known vulnerabilities found" after looking nothing up; this never does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from packaging.utils import canonicalize_name

from shipyard.bundle.check import Finding
from shipyard.bundle.manifest import Manifest
from shipyard.depaudit.database import (
    OSV_API,
    Fetcher,
    OfflineSource,
    OnlineSource,
    Source,
    Unreadable,
    load,
    urllib_fetcher,
)
from shipyard.depaudit.osv import (
    LEVELS,
    PACKAGE_NAME,
    PIN,
    Level,
    affected_entries,
    evaluate,
    parse_version,
    rank,
    rate,
    shown,
)
from shipyard.errors import ConfigError

Status = Literal["clean", "vulnerable", "unknown"]


@dataclass(frozen=True)
class Vulnerability:
    id: str
    aliases: tuple[str, ...]
    package: str  # PEP 503 normalised
    version: str
    severity: Level
    score: float | None
    summary: str
    fixed: tuple[str, ...]

    @property
    def ids(self) -> set[str]:
        return {self.id, *self.aliases}


@dataclass(frozen=True)
class Unchecked:
    package: str
    reason: str


@dataclass
class AuditReport:
    bundle: str
    status: Status
    source: str
    packages: dict[str, str] = field(default_factory=dict)
    vulnerabilities: list[Vulnerability] = field(default_factory=list)
    unchecked: list[Unchecked] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    undetermined: list[str] = field(default_factory=list)
    withdrawn: int = 0
    database_modified: str = ""

    def counts(self) -> dict[str, int]:
        return {level: sum(v.severity == level for v in self.vulnerabilities) for level in LEVELS}

    def exit_code(self, fail_on: Level = "low") -> int:
        """0 clean, 1 a vulnerability at or above `fail_on`, 2 could not tell."""
        if any(rank(v.severity) <= rank(fail_on) for v in self.vulnerabilities):
            return 1
        return 2 if self.status == "unknown" else 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["counts"] = self.counts()
        data["exit_code"] = self.exit_code()
        return data


def audit_bundle(
    bundle_dir: Path,
    *,
    database: Path | None = None,
    online: bool = False,
    fetcher: Fetcher | None = None,
    api_url: str = OSV_API,
    max_age: timedelta | None = None,
    now: datetime | None = None,
    sbom: Path | None = None,
) -> AuditReport:
    """Audit the bundle at `bundle_dir`; write a CycloneDX 1.5 SBOM to `sbom` if given.

    `database` is an offline OSV export (zip, folder or JSON file); `online` asks the OSV API
    through `fetcher` (default: urllib, HTTPS, a timeout). `max_age` refuses an offline
    export whose newest record is older than that. Raises `ManifestError` only when the
    bundle itself cannot be read; every database failure is a report with status "unknown".
    """
    if database is not None and online:
        raise ConfigError(
            "Got both an offline database and online=True. Expected one of them.",
            hint="Pass --database FILE on a closed network, or --online to ask the OSV API.",
        )
    manifest = Manifest.read(Path(bundle_dir))
    report = AuditReport(bundle=f"{manifest.name}:{manifest.version}", status="unknown", source="")
    if sbom is not None:
        from shipyard.depaudit.sbom import write_sbom  # the CycloneDX library loads only here

        write_sbom(Path(bundle_dir), sbom, manifest=manifest)
    pinned = _pinned(manifest, report)
    source = _open(database, online, fetcher, api_url, report)
    if source is not None:
        report.source = source.description
        if isinstance(source, OfflineSource):
            report.database_modified = source.newest
            _check_age(source, max_age, now, report)
        try:
            for name, version in pinned.items():
                _match(source, name, version, report)
                report.packages[name] = version
        except Unreadable as exc:
            report.problems.append(exc.reason)
    if not pinned and not report.unchecked:
        report.problems.append("The bundle pins no dependencies, so nothing was audited.")
    if report.unchecked:
        report.problems.append(
            f"{len(report.unchecked)} dependencies could not be audited (see 'unchecked')."
        )
    report.vulnerabilities.sort(key=lambda v: (rank(v.severity), v.package, v.id))
    if report.vulnerabilities:
        report.status = "vulnerable"
    elif not report.problems:
        report.status = "clean"
    return report


def _pinned(manifest: Manifest, report: AuditReport) -> dict[str, str]:
    packages = manifest.dependencies.packages if manifest.dependencies else {}
    pinned: dict[str, str] = {}
    for raw_name, spec in sorted(packages.items()):
        # No real PyPI name is longer than a couple hundred characters.
        match = PACKAGE_NAME.fullmatch(raw_name.strip()) if len(raw_name) <= 200 else None
        if not match:
            report.unchecked.append(Unchecked(shown(raw_name), "not a valid package name"))
            continue
        name = canonicalize_name(match.group(1))
        pin = PIN.fullmatch(spec.strip())
        if pin is None:
            report.unchecked.append(Unchecked(name, "not pinned to one exact version (==)"))
        elif parse_version(pin["version"]) is None:
            report.unchecked.append(Unchecked(name, "the pinned version is not PEP 440"))
        else:
            pinned[name] = pin["version"]
    return pinned


def _open(
    database: Path | None,
    online: bool,
    fetcher: Fetcher | None,
    api_url: str,
    report: AuditReport,
) -> Source | None:
    if database is not None:
        try:
            return load(Path(database))
        except Unreadable as exc:
            report.source = f"offline OSV database {database}"
            report.problems.append(exc.reason)
            return None
    if online:
        return OnlineSource(fetcher=fetcher or urllib_fetcher(), url=api_url)
    report.problems.append(
        "No vulnerability database: pass an offline OSV export (database=) or online=True."
    )
    return None


def _check_age(
    source: OfflineSource, max_age: timedelta | None, now: datetime | None, report: AuditReport
) -> None:
    if max_age is None:
        return
    try:
        newest = datetime.fromisoformat(source.newest.replace("Z", "+00:00"))
    except ValueError:
        report.problems.append("The database's records carry no readable 'modified' date.")
        return
    if newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    if current - newest > max_age:
        report.problems.append(
            f"The database is stale: its newest record is from {newest:%Y-%m-%d}, "
            f"older than the allowed {max_age.days} days."
        )


def _match(source: Source, name: str, version: str, report: AuditReport) -> None:
    for record in source.lookup(name, version):
        if not affected_entries(record, name):
            continue  # an answer about another package (or ecosystem) is no answer
        if record.get("withdrawn"):
            report.withdrawn += 1  # retracted advisories are not vulnerabilities
            continue
        verdict = evaluate(record, name, version)
        if verdict.undetermined and not source.prematched:
            report.undetermined.append(f"{shown(record['id'])}: {verdict.undetermined}")
        if not (verdict.affected or source.prematched):
            continue
        rating = rate(record, name)
        aliases = record.get("aliases")
        found = Vulnerability(
            id=shown(record["id"]),
            aliases=tuple(shown(a) for a in aliases if isinstance(a, str))
            if isinstance(aliases, list)
            else (),
            package=name,
            version=version,
            severity=rating.level,
            score=rating.score,
            summary=shown(record.get("summary") or "", 200),
            fixed=tuple(shown(f, 40) for f in verdict.fixed),
        )
        _add(report, found)


def _add(report: AuditReport, found: Vulnerability) -> None:
    # OSV's PyPI export holds PYSEC and GHSA records of one flaw, linked by aliases: merge
    # them, keeping the worse rating, so one flaw is counted once.
    for i, known in enumerate(report.vulnerabilities):
        if known.package == found.package and known.ids & found.ids:
            worse, other = (
                (known, found) if rank(known.severity) <= rank(found.severity) else (found, known)
            )
            if worse.severity == "unknown" and other.severity != "unknown":
                worse, other = other, worse  # a real rating beats none
            aliases = tuple(sorted((worse.ids | other.ids) - {worse.id}))
            fixed = tuple(dict.fromkeys(worse.fixed + other.fixed))
            report.vulnerabilities[i] = Vulnerability(
                **{**asdict(worse), "aliases": aliases, "fixed": fixed}
            )
            return
    report.vulnerabilities.append(found)


def critical_findings(report: AuditReport) -> list[Finding]:
    """The hook for `shipyard check`: findings to add to the bundle's static findings.

    `critical-vulnerability` (error: the bundle is fragile) per critical advisory;
    `known-vulnerability` (warning) per other advisory; `audit-incomplete` (warning) when the
    audit could not tell, so a check never reads as "audited, clean" when it was not.
    """
    found = []
    for vuln in report.vulnerabilities:
        cve = next((a for a in vuln.aliases if a.startswith("CVE-")), "")
        label = f"{vuln.id} ({cve})" if cve else vuln.id
        score = f", CVSS {vuln.score:g}" if vuln.score is not None else ""
        upgrade = (
            f"Upgrade {vuln.package} to a fixed version ({', '.join(vuln.fixed[:3])})"
            if vuln.fixed
            else f"No fixed version of {vuln.package} is known; replace or drop it"
        )
        critical = vuln.severity == "critical"
        found.append(
            Finding(
                code="critical-vulnerability" if critical else "known-vulnerability",
                severity="error" if critical else "warning",
                message=f"Dependency {vuln.package}=={vuln.version} has a known "
                f"{vuln.severity}-severity vulnerability {label}{score}.",
                hint=f"{upgrade}, then repackage. `shipyard audit BUNDLE` lists every advisory.",
                where=f"dependencies.packages.{vuln.package}",
            )
        )
    if report.status == "unknown":
        found.append(
            Finding(
                code="audit-incomplete",
                severity="warning",
                message="The dependency audit could not tell: " + " ".join(report.problems[:2]),
                hint="Pass a readable OSV export (e.g. PyPI.zip from osv.dev) or run online.",
                where="dependencies",
            )
        )
    return found
