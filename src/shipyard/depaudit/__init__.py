"""Dependency audit and SBOM: a bundle's pinned packages against OSV advisories.

It sits one floor above `shipyard.bundle` (beside registry and runtimes): it reads a bundle's
manifest and returns `bundle.check.Finding`s, and it may reach the OSV API over the network
through an injectable fetcher, which the files-only bundle floor must not.
"""

from shipyard.depaudit.audit import (
    AuditReport,
    Unchecked,
    Vulnerability,
    audit_bundle,
    critical_findings,
)
from shipyard.depaudit.database import OSV_API, Fetcher, urllib_fetcher
from shipyard.depaudit.osv import Level
from shipyard.depaudit.sbom import sbom_json, write_sbom

__all__ = [
    "OSV_API",
    "AuditReport",
    "Fetcher",
    "Level",
    "Unchecked",
    "Vulnerability",
    "audit_bundle",
    "critical_findings",
    "sbom_json",
    "urllib_fetcher",
    "write_sbom",
]
