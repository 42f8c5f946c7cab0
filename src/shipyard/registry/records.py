"""The plain values the registry returns: frozen dataclasses, never live database rows.

Callers (the CLI, serving, rollout) get snapshots they can keep, compare and print; nothing
here holds a connection or lazily loads anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from shipyard.bundle.manifest import Manifest


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


class _Record:
    """`to_dict()` for the CLI's `--json` and tables: JSON types only, times as ISO 8601."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class FileRecord(_Record):
    """One file of a registered version, as stored in the artifact store by its sha256."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class VersionRecord(_Record):
    """One immutable registered version of a model."""

    name: str
    version: str
    digest: str
    manifest_yaml: str = field(repr=False)
    files: tuple[FileRecord, ...]
    size: int
    created_at: datetime
    created_by: str
    signature: bytes | None = field(default=None, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def manifest(self) -> Manifest:
        """Parse the stored `shipyard.yaml` text."""
        return Manifest.from_text(self.manifest_yaml, f"manifest of {self.ref}")

    def to_dict(self) -> dict[str, Any]:
        """A one-line summary: the manifest text and file list stay out of listings."""
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "size": self.size,
            "files": len(self.files),
            "signed": self.signature is not None,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
        }


@dataclass(frozen=True, slots=True)
class PushResult(_Record):
    """What a push did: `created` is False when identical content was already registered."""

    name: str
    version: str
    digest: str
    created: bool

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True, slots=True)
class ModelSummary(_Record):
    """One model with its version count, latest version and aliases."""

    name: str
    versions: int
    latest: str | None
    aliases: dict[str, str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AliasEvent(_Record):
    """One move of an alias: `from_version` is None when the alias was created."""

    name: str
    alias: str
    from_version: str | None
    to_version: str
    actor: str
    at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry(_Record):
    """One link of the audit chain: `hash = sha256(prev_hash + canonical JSON of the entry)`."""

    seq: int
    at: datetime
    actor: str
    origin: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditCheck(_Record):
    """The result of walking the audit chain; truthy when every link holds."""

    ok: bool
    entries: int
    first_bad: int | None = None
    problem: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True, slots=True)
class Revision(_Record):
    """One applied state of a deployment; numbers run 1..n per deployment."""

    id: int
    deployment: str
    number: int
    spec: dict[str, Any] = field(compare=False)
    created_at: datetime
    actor: str
    reason: str


@dataclass(frozen=True, slots=True)
class Deployment(_Record):
    """A named endpoint, its owner and the number of its current revision."""

    name: str
    owner: str
    created_at: datetime
    revision: int
