"""The registry: bundle versions, aliases, deployments and the audit log (floor 4).

`Registry.open(settings)` is the entry point; everything it returns is a plain record from
`shipyard.registry.records`.
"""

from __future__ import annotations

from shipyard.registry.records import (
    AliasEvent,
    AuditCheck,
    AuditEntry,
    Deployment,
    FileRecord,
    ModelSummary,
    PushResult,
    Revision,
    VersionRecord,
)
from shipyard.registry.refs import Ref, parse_ref
from shipyard.registry.registry import Registry

__all__ = [
    "AliasEvent",
    "AuditCheck",
    "AuditEntry",
    "Deployment",
    "FileRecord",
    "ModelSummary",
    "PushResult",
    "Ref",
    "Registry",
    "Revision",
    "VersionRecord",
    "parse_ref",
]
