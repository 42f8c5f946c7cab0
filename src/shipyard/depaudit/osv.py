"""OSV records: does an advisory affect one pinned PyPI package, and how bad is it?

The evaluation follows the OSV schema's `IsVulnerable` pseudocode (ossf/osv-schema,
docs/schema.md, "Evaluation"): a version is affected when it is listed in `versions`, or when
a range's sorted events leave it vulnerable (`introduced` switches on, `fixed` switches off at
that version, `last_affected` switches off just above it) and it lies below a `limit`, if any.
PyPI's ECOSYSTEM and SEMVER ranges are ordered with PEP 440 (`packaging`); GIT ranges need the
repository's commit graph, so they are skipped and only `versions` can match them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

Level = Literal["critical", "high", "medium", "low", "none", "unknown"]
LEVELS: tuple[Level, ...] = ("critical", "high", "medium", "low", "none", "unknown")
# Worst first; "unknown" is ranked as bad as "critical" where a gate must decide (see rank()).
ECOSYSTEM = "PyPI"
# PEP 508 names, with optional extras (they do not change what is installed from PyPI).
PACKAGE_NAME = re.compile(
    r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])(\[[A-Za-z0-9._,\s-]*\])?"
)
PIN = re.compile(r"===?\s*(?P<version>[A-Za-z0-9][A-Za-z0-9.+!_-]*)")  # used with fullmatch
# GHSA writes MODERATE where CVSS says medium.
_WORDS: dict[str, Level] = {
    "critical": "critical",
    "high": "high",
    "moderate": "medium",
    "medium": "medium",
    "low": "low",
    "none": "none",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def shown(text: object, limit: int = 80) -> str:
    """Text from a database or a manifest made safe for one line of output."""
    flat = _CONTROL.sub("?", str(text))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def is_pypi(ecosystem: object) -> bool:
    # OSV may scope an ecosystem with ':<suffix>'; PyPI has none, but tolerate one.
    return isinstance(ecosystem, str) and ecosystem.split(":", 1)[0].lower() == "pypi"


def _list(value: object) -> list[Any]:
    # A string where a list belongs would otherwise match by substring.
    return value if isinstance(value, list) else []


def parse_version(text: object) -> Version | None:
    if not isinstance(text, str) or len(text) > 128:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


@dataclass(frozen=True)
class Verdict:
    """Whether one advisory affects one version; `undetermined` says why it could not tell."""

    affected: bool
    fixed: tuple[str, ...] = ()
    undetermined: str = ""


def affected_entries(record: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The record's `affected` items about PyPI package `name` (PEP 503 normalised)."""
    wanted = canonicalize_name(name)
    found = []
    for item in _list(record.get("affected")):
        package = item.get("package") if isinstance(item, dict) else None
        if not isinstance(package, dict) or not is_pypi(package.get("ecosystem")):
            continue
        other = package.get("name")
        if isinstance(other, str) and canonicalize_name(other) == wanted:
            found.append(item)
    return found


def evaluate(record: dict[str, Any], name: str, version: str) -> Verdict:
    """Apply the OSV evaluation to `name==version`."""
    pinned = parse_version(version)
    fixed: list[str] = []
    undetermined = ""
    hit = False
    for item in affected_entries(record, name):
        listed = [v for v in _list(item.get("versions")) if isinstance(v, str)]
        if version in listed or (
            pinned is not None and any(parse_version(v) == pinned for v in listed)
        ):
            hit = True
        for rng in _list(item.get("ranges")):
            if not isinstance(rng, dict) or rng.get("type") not in ("ECOSYSTEM", "SEMVER"):
                continue  # GIT ranges cannot be ordered without the repository
            events = _list(rng.get("events"))
            fixed += [
                e["fixed"]
                for e in events
                if isinstance(e, dict) and isinstance(e.get("fixed"), str)
            ]
            if pinned is None:
                undetermined = undetermined or "the pinned version is not a PEP 440 version"
                continue
            result = _in_range(pinned, events)
            if result is None:
                undetermined = undetermined or "a range holds a version that is not PEP 440"
            elif result:
                hit = True
    if hit:
        undetermined = ""
    return Verdict(affected=hit, fixed=tuple(dict.fromkeys(fixed)), undetermined=undetermined)


def _in_range(version: Version, events: list[Any]) -> bool | None:
    """True/False per the OSV pseudocode; None when an event's version cannot be parsed."""
    timeline: list[tuple[Version | None, str]] = []
    limits: list[Version] = []
    for event in events:
        if not isinstance(event, dict) or len(event) != 1:
            return None  # the schema allows exactly one kind per event
        ((kind, raw),) = event.items()
        if kind == "introduced" and raw == "0":
            timeline.append((None, kind))  # "0" sorts before every version
        elif kind == "limit" and isinstance(raw, str) and "*" in raw:
            continue  # an infinite limit is no limit
        elif kind in ("introduced", "fixed", "last_affected", "limit"):
            parsed = parse_version(raw)
            if parsed is None:
                return None
            if kind == "limit":
                limits.append(parsed)
            else:
                timeline.append((parsed, kind))
        # Unknown event kinds are future schema additions; ignoring them is what OSV asks.
    if limits and not any(version < limit for limit in limits):
        return False
    # None (version "0") first; at one version, apply introduced before fixed.
    order = {"introduced": 0, "last_affected": 1, "fixed": 2}
    timeline.sort(key=lambda e: (e[0] is not None, e[0] or Version("0"), order[e[1]]))
    vulnerable = False
    for at, kind in timeline:
        if kind == "introduced" and (at is None or version >= at):
            vulnerable = True
        elif at is not None and (
            (kind == "fixed" and version >= at) or (kind == "last_affected" and version > at)
        ):
            vulnerable = False
    return vulnerable


@dataclass(frozen=True)
class Rating:
    level: Level
    score: float | None = None
    source: str = ""  # "CVSS_V3", "database_specific", ...
    extra: dict[str, str] = field(default_factory=dict)


def rate(record: dict[str, Any], name: str) -> Rating:
    """Severity of `record` for package `name`: CVSS first, then the database's own word.

    Package-level severity wins over the record's (the schema forbids both). Of several CVSS
    vectors the newest standard that parses is used (v4, then v3, then v2).
    """
    entries: list[Any] = []
    for item in affected_entries(record, name):
        entries += _list(item.get("severity"))
    entries = entries or _list(record.get("severity"))
    by_type = {e.get("type"): e.get("score") for e in entries if isinstance(e, dict)}
    for kind in ("CVSS_V4", "CVSS_V3", "CVSS_V2"):
        score = _cvss_score(kind, by_type.get(kind))
        if score is not None:
            return Rating(level=_cvss_level(kind, score), score=score, source=kind)
    words = [by_type.get("Ubuntu")]
    for item in affected_entries(record, name):
        specific = item.get("database_specific")
        words.append(specific.get("severity") if isinstance(specific, dict) else None)
    specific = record.get("database_specific")
    words.append(specific.get("severity") if isinstance(specific, dict) else None)
    for word in words:
        if isinstance(word, str) and word.strip().lower() in _WORDS:
            return Rating(level=_WORDS[word.strip().lower()], source="database_specific")
    return Rating(level="unknown")


def _cvss_score(kind: str, vector: object) -> float | None:
    if not isinstance(vector, str) or len(vector) > 256:
        return None
    # cvss is imported here so that `shipyard check` pays for it only when it audits.
    from cvss import CVSS2, CVSS3, CVSS4, CVSSError

    calculator = {"CVSS_V4": CVSS4, "CVSS_V3": CVSS3, "CVSS_V2": CVSS2}[kind]
    try:
        return float(calculator(vector.strip()).base_score)
    except (CVSSError, ValueError, KeyError, IndexError, TypeError, ArithmeticError):
        return None  # a malformed vector falls through to the next source, never crashes


def _cvss_level(kind: str, score: float) -> Level:
    # NVD's qualitative scales: v2 has no "critical"; v3 and v4 share one.
    if kind == "CVSS_V2":
        return "high" if score >= 7.0 else "medium" if score >= 4.0 else "low"
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low" if score > 0 else "none"


def rank(level: Level) -> int:
    """Smaller is worse; an unknown severity ranks with critical so no gate waves it through."""
    return 0 if level == "unknown" else LEVELS.index(level)
