"""The `Registry`: versions of bundles, aliases, deployments and the audit log, in one place.

Floor 4 of DESIGN.md: it reads manifests and moves files, but never loads a model and never
imports a runtime. Every write runs in one transaction that holds the registry-wide write lock
and appends its audit entry in the same transaction, so a change and its record of who made
it commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError

from shipyard.errors import ConflictError, FragileBundleError
from shipyard.registry import audit, catalog, deployments, transfer
from shipyard.registry.database import Database
from shipyard.registry.records import (
    AliasEvent,
    AuditCheck,
    AuditEntry,
    Deployment,
    ModelSummary,
    PushResult,
    Revision,
    VersionRecord,
)
from shipyard.registry.refs import check_name, check_version, parse_ref
from shipyard.registry.store import Store, open_store
from shipyard.registry.tables import utcnow
from shipyard.settings import Settings

Progress = Callable[[int, int], None]


class Registry:
    """Versions, aliases, deployments and the audit log over a database and a store."""

    def __init__(self, settings: Settings, database: Database, store: Store) -> None:
        self.settings = settings
        self.database = database
        self.store = store

    @classmethod
    def open(cls, settings: Settings) -> Registry:
        """Open (creating `settings.home` and migrating the schema as needed)."""
        settings.home.mkdir(parents=True, exist_ok=True)
        database = Database(settings.resolved_database_url, timeout_s=settings.db_timeout_s)
        try:
            database.migrate()
            store = open_store(settings.resolved_store_url)
        except BaseException:
            database.close()
            raise
        return cls(settings, database, store)

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry(database={self.database.shown_url!r}, store={self.store.url!r})"

    # Versions ---------------------------------------------------------------------------

    def push(
        self,
        bundle_dir: Path,
        *,
        actor: str | None = None,
        fragile_reasons: Sequence[str] = (),
        allow_fragile: bool = False,
        progress: Progress | None = None,
    ) -> PushResult:
        """Register the bundle in `bundle_dir`; identical content again is a no-op."""
        root = Path(bundle_dir)
        # Bad input leaves no trace: everything but the sha256 is checked here, before any
        # copy; each file's sha256 while it is copied into the store, where nothing is
        # published unless every file matched, and nothing is registered before that.
        local = transfer.read_bundle(root)
        manifest, entries = local.manifest, local.entries
        if fragile_reasons and not allow_fragile:
            raise FragileBundleError(
                f"Got a fragile bundle {manifest.name}:{manifest.version}: "
                + "; ".join(fragile_reasons)
                + ". Expected no error-level findings.",
                hint="Fix the findings and package again, or push with --allow-fragile "
                "to accept them on the record.",
                reasons=list(fragile_reasons),
            )
        result = PushResult(manifest.name, manifest.version, manifest.digest(), created=False)
        with self.database.read() as conn:
            known = self._existing(conn, result)  # ConflictError before any upload
        # Even for known content: every file is still hashed and checked against the manifest,
        # blobs already stored are not copied again, and a blob that was found damaged (and
        # removed) on a pull is stored again from this good copy.
        transfer.upload(self.store, root, entries, progress)
        if known:
            return result
        who = actor or self.settings.resolved_actor
        try:
            with self.database.write() as conn:
                if self._existing(conn, result):
                    return result
                at = utcnow()
                model = catalog.ensure_model(conn, manifest.name, actor=who, at=at)
                catalog.insert_version(
                    conn,
                    model=model,
                    version=manifest.version,
                    digest=result.digest,
                    manifest_yaml=local.manifest_yaml,
                    entries=entries,
                    signature=local.signature,
                    actor=who,
                    at=at,
                )
                details = {"digest": result.digest, "files": len(entries)}
                details["bytes"] = sum(e.size for e in entries)
                self._record(conn, who, "push", result.ref, details)
                if fragile_reasons:
                    reasons = {"reasons": list(fragile_reasons), "digest": result.digest}
                    self._record(conn, who, "push.allow_fragile", result.ref, reasons)
        except DatabaseIntegrityError:
            # The unique (model, version) constraint decided a race the lock should have
            # prevented (e.g. a writer outside shipyard): re-read and answer as if serialized.
            with self.database.read() as conn:
                if self._existing(conn, result):
                    return result
            raise
        return PushResult(result.name, result.version, result.digest, created=True)

    def _existing(self, conn: Connection, pushed: PushResult) -> bool:
        """True when this exact content is registered; ConflictError for other content."""
        found = catalog.find_version(conn, pushed.name, pushed.version)
        if found is None:
            return False
        if found.digest == pushed.digest:
            return True
        raise ConflictError(
            f"Got different content for {pushed.ref} (manifest digest {pushed.digest[:12]}…), "
            f"but {pushed.ref} is already registered with digest {found.digest[:12]}…. "
            "Expected new content under a new version: versions are immutable.",
            hint="Bump `version` in shipyard.yaml (e.g. to the next patch version), "
            "package again and push.",
            ref=pushed.ref,
        )

    def resolve(self, ref: str) -> VersionRecord:
        """The version `NAME:VERSION`, `NAME@ALIAS` or `NAME` (latest pushed) points at."""
        parsed = parse_ref(ref)
        with self.database.read() as conn:
            return catalog.resolve(conn, parsed)

    def pull(self, ref: str, dest: Path, *, progress: Progress | None = None) -> Path:
        """Write the bundle to `dest` (new or empty folder), complete and verified, atomically."""
        return transfer.download(self.store, self.resolve(ref), Path(dest), progress)

    def fetch(self, ref: str, *, progress: Progress | None = None) -> Path:
        """A local copy under `settings.cache_dir/<digest>`, downloaded once and then reused."""
        return transfer.cached(self.store, self.resolve(ref), self.settings.cache_dir, progress)

    def models(self) -> list[ModelSummary]:
        with self.database.read() as conn:
            return catalog.list_models(conn)

    def versions(self, name: str) -> list[VersionRecord]:
        """Every version of model `name`, oldest first."""
        check_name(name, what="model name")
        with self.database.read() as conn:
            return catalog.list_versions(conn, name)

    # Aliases ----------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: str, *, actor: str | None = None) -> None:
        """Point `name@alias` at `name:version` atomically, recording the move."""
        check_name(name, what="model name")
        check_name(alias, what="alias")
        check_version(version)
        who = actor or self.settings.resolved_actor
        with self.database.write() as conn:
            record = catalog.resolve(conn, parse_ref(f"{name}:{version}"))
            event = catalog.move_alias(conn, record, alias, actor=who, at=utcnow())
            if event is not None:
                details = {"from": event.from_version, "to": event.to_version}
                self._record(conn, who, "alias.set", f"{name}@{alias}", details)

    def aliases(self, name: str) -> dict[str, str]:
        check_name(name, what="model name")
        with self.database.read() as conn:
            return catalog.alias_map(conn, name)

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Every move of the model's aliases (or of one alias), oldest first."""
        check_name(name, what="model name")
        if alias is not None:
            check_name(alias, what="alias")
        with self.database.read() as conn:
            return catalog.alias_history(conn, name, alias)

    # Deployments ------------------------------------------------------------------------

    def deploy(
        self,
        name: str,
        spec: dict[str, Any],
        *,
        owner: str | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> Revision:
        """Apply `spec` as the next revision of deployment `name` (created on first use)."""
        check_name(name, what="deployment name")
        who = actor or self.settings.resolved_actor
        with self.database.write() as conn:
            pinned = deployments.pin_spec(conn, spec)
            revision = deployments.deploy(
                conn, name, pinned, owner=owner or who, actor=who, reason=reason, at=utcnow()
            )
            details = {"revision": revision.number, "reason": reason}
            details["models"] = [v["model"] for v in pinned["variants"]]
            self._record(conn, who, "deploy", name, details)
        return revision

    def deployments(self) -> list[Deployment]:
        with self.database.read() as conn:
            return deployments.list_deployments(conn)

    def current_revision(self, name: str) -> Revision:
        check_name(name, what="deployment name")
        with self.database.read() as conn:
            return deployments.current(conn, name)

    def revisions(self, name: str) -> list[Revision]:
        """Every revision of deployment `name`, oldest first."""
        check_name(name, what="deployment name")
        with self.database.read() as conn:
            return deployments.history(conn, name)

    def change_token(self) -> int:
        """A counter that grows whenever any deployment gets a revision; cheap to poll."""
        with self.database.read() as conn:
            return deployments.change_token(conn)

    # Audit ------------------------------------------------------------------------------

    def audit(self, *, limit: int = 100, target: str | None = None) -> list[AuditEntry]:
        """The newest audit entries, newest first (optionally for one target)."""
        with self.database.read() as conn:
            return audit.entries(conn, limit=limit, target=target)

    def verify_audit(self) -> AuditCheck:
        """Walk the whole hash chain; the result names the first broken entry, if any."""
        with self.database.read() as conn:
            return audit.verify(conn)

    def _record(
        self, conn: Connection, actor: str, action: str, target: str, details: dict[str, Any]
    ) -> None:
        audit.append(
            conn,
            actor=actor,
            origin=self.settings.origin,
            action=action,
            target=target,
            details=details,
        )
