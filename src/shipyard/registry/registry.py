"""The `Registry`: versions of bundles, aliases, deployments and the audit log, in one place.

Floor 4 of DESIGN.md: it reads manifests and moves files, but never loads a model and never
imports a runtime. Every write runs in one transaction that holds the registry-wide write lock
and appends its audit entry in the same transaction, so a change and its record of who made
it commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError

from shipyard.errors import ConflictError, FragileBundleError, UserError
from shipyard.registry import audit, catalog, deployments, rollouts, transfer
from shipyard.registry import keys as key_records
from shipyard.registry.database import Database
from shipyard.registry.keys import RegistryKeyStore
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
from shipyard.registry.rollouts import DecisionRecord, RolloutRecord
from shipyard.registry.store import Store, open_store
from shipyard.registry.tables import utcnow
from shipyard.security.keys import KeyRecord
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

    # Rollouts ---------------------------------------------------------------------------

    def start_rollout(
        self,
        name: str,
        *,
        strategy: str,
        plan: dict[str, Any],
        candidate: str,
        actor: str | None = None,
        reason: str = "",
        spec: dict[str, Any] | None = None,
    ) -> RolloutRecord:
        """Start a rollout of `candidate` on deployment `name`, at step 0, running.

        The current revision becomes the baseline (what a rollback re-applies) and the
        candidate is pinned to NAME:VERSION and its digest. `spec`, when given, is applied as
        the next revision in the same transaction (e.g. the first canary step), so the
        rollout and the traffic it causes commit together. ConflictError when the deployment
        already has an active rollout, even if two starts race.
        """
        check_name(name, what="deployment name")
        who = self._actor(actor)
        if strategy not in rollouts.STRATEGIES:
            raise UserError(
                f"Got {str(strategy)[:40]!r} for a rollout strategy. Expected one of "
                f"{', '.join(rollouts.STRATEGIES)}.",
                hint="Set `strategy` in the rollout plan, e.g. strategy: canary.",
            )
        plan_text = rollouts.json_text(plan, "the rollout plan", limit=rollouts.PLAN_LIMIT)
        rollouts.check_text(reason, "the reason", limit=rollouts.TEXT_LIMIT)
        ref = parse_ref(candidate)
        try:
            with self.database.write() as conn:
                at = utcnow()
                deployment = rollouts.deployment_id(conn, name)
                rollouts.check_none_active(conn, deployment, name)
                baseline = deployments.current(conn, name)
                version = catalog.resolve(conn, ref)
                rollout_id = rollouts.insert(
                    conn,
                    deployment=deployment,
                    strategy=strategy,
                    plan_text=plan_text,
                    baseline=baseline,
                    candidate=version,
                    actor=who,
                    reason=reason,
                    at=at,
                )
                details: dict[str, Any] = {
                    "rollout": rollout_id,
                    "strategy": strategy,
                    "candidate": version.ref,
                    "baseline_revision": baseline.number,
                    "reason": reason,
                }
                if spec is not None:
                    revision = self._apply(conn, name, spec, who, reason, rollout_id, at)
                    table = rollouts.rollouts_table  # generation stays 1: one new row
                    conn.execute(
                        table.update().where(table.c.id == rollout_id).values(revision=revision)
                    )
                    details["revision"] = revision
                self._record(conn, who, "rollout.start", name, details)
                return rollouts.get(conn, rollout_id)
        except DatabaseIntegrityError:
            # The partial unique index decided a race the write lock should have prevented
            # (a writer outside shipyard): answer as the lock would have.
            with self.database.read() as conn:
                current = rollouts.active(conn, name)
            if current is not None:
                raise rollouts.already_active(name, current.id, current.status) from None
            raise

    def active_rollout(self, name: str) -> RolloutRecord | None:
        """The running or paused rollout of deployment `name`, if any."""
        check_name(name, what="deployment name")
        with self.database.read() as conn:
            return rollouts.active(conn, name)

    def rollouts(self, name: str) -> list[RolloutRecord]:
        """Every rollout of deployment `name`, oldest first."""
        check_name(name, what="deployment name")
        with self.database.read() as conn:
            return rollouts.history(conn, name)

    def rollout(self, rollout_id: int) -> RolloutRecord:
        rollouts.check_id(rollout_id)
        with self.database.read() as conn:
            return rollouts.get(conn, rollout_id)

    def update_rollout(
        self,
        rollout_id: int,
        *,
        generation: int,
        actor: str | None = None,
        reason: str = "",
        spec: dict[str, Any] | None = None,
        **changes: Any,
    ) -> RolloutRecord:
        """Change `status`, `step`, `step_started_at`, `state` or `final_reason` atomically.

        Compare-and-set: `generation` must be the one last read, or ConflictError (someone
        else changed the rollout meanwhile: read it again and decide again). A final status
        (promoted, rolled_back, aborted, failed) is never left again and needs a reason
        (`final_reason`, or `reason`); it also ends the lease. `spec`, when given, is applied
        as the deployment's next revision in the same transaction (a step's new weights, or
        the baseline's spec for a rollback).
        """
        rollouts.check_id(rollout_id)
        rollouts.check_id(generation, "generation")
        who = self._actor(actor)
        rollouts.check_text(reason, "the reason", limit=rollouts.TEXT_LIMIT)
        if changes.get("status") in rollouts.FINAL_STATUSES and not changes.get("final_reason"):
            changes["final_reason"] = reason
        with self.database.write() as conn:
            at = utcnow()
            before = rollouts.get(conn, rollout_id)
            if before.generation != generation:
                raise rollouts.stale(rollout_id, generation, before.generation)
            values = rollouts.check_changes(before, changes, at)
            if not changes and spec is None:
                raise UserError(
                    f"Got no change for rollout {rollout_id}. Expected at least one of "
                    f"{', '.join(rollouts.CHANGEABLE)} or a spec.",
                    hint="Name what to change, e.g. update_rollout(id, generation=g, step=1).",
                )
            details: dict[str, Any] = {"rollout": rollout_id, "reason": reason}
            if spec is not None:
                why = reason or str(values.get("final_reason") or "")
                revision = self._apply(conn, before.deployment, spec, who, why, rollout_id, at)
                values["revision"] = details["revision"] = revision
            rollouts.compare_and_set(
                conn, rollout_id, generation, {**values, "updated_at": at, "updated_by": who}
            )
            after = rollouts.get(conn, rollout_id)
            details.update({"from": before.status, "to": after.status, "step": after.step})
            if after.final_reason is not None:
                details["final_reason"] = after.final_reason
            if after.status != before.status:
                action = f"rollout.{after.status}"
            else:
                action = "rollout.step" if after.step != before.step else "rollout.update"
            self._record(conn, who, action, before.deployment, details)
            return after

    def record_decision(
        self,
        rollout_id: int,
        *,
        rule: str,
        outcome: str,
        measured: dict[str, Any] | None = None,
        samples: dict[str, Any] | None = None,
        dry_run: bool = False,
        step: int | None = None,
        reason: str = "",
        actor: str | None = None,
        champion: str | None = None,
        champion_digest: str | None = None,
        candidate: str | None = None,
        candidate_digest: str | None = None,
        at: datetime | None = None,
    ) -> DecisionRecord:
        """Append one decision record (append-only: the database refuses edits).

        `step` defaults to the rollout's current step; champion and candidate (with their
        digests) default to the ones pinned when the rollout started. Manual outcomes
        (approve, pause, resume, abort, promote_manual) are audited as well.
        """
        rollouts.check_id(rollout_id)
        who = self._actor(actor)
        if outcome not in rollouts.OUTCOMES:
            raise UserError(
                f"Got {str(outcome)[:40]!r} for a decision outcome. Expected one of "
                f"{', '.join(rollouts.OUTCOMES)}.",
                hint="This is a bug in the rollout controller; report it.",
            )
        values: dict[str, Any] = {
            "rule": rollouts.check_text(rule, "the rule name", limit=200, empty=False),
            "outcome": outcome,
            "measured": rollouts.json_text(
                {} if measured is None else measured, "the measured values"
            ),
            "samples": rollouts.json_text({} if samples is None else samples, "the sample sizes"),
            "dry_run": rollouts.check_flag(dry_run, "dry_run"),
            "actor": who,
            "reason": rollouts.check_text(reason, "the reason", limit=rollouts.TEXT_LIMIT),
            "at": rollouts.check_when(at, "the decision time") if at is not None else utcnow(),
        }
        with self.database.write() as conn:
            record = rollouts.get(conn, rollout_id)
            values["step"] = record.step if step is None else rollouts.check_step(step)
            values.update(
                rollouts.pinned_versions(
                    "champion", champion, champion_digest, record.champion, record.champion_digest
                )
            )
            values.update(
                rollouts.pinned_versions(
                    "candidate",
                    candidate,
                    candidate_digest,
                    record.candidate,
                    record.candidate_digest,
                )
            )
            decision = rollouts.insert_decision(conn, {**values, "rollout_id": rollout_id})
            if outcome in rollouts.MANUAL_OUTCOMES and not dry_run:
                details = {"rollout": rollout_id, "decision": decision.id, "reason": reason}
                self._record(conn, who, f"rollout.{outcome}", record.deployment, details)
            return decision

    def decisions(self, rollout_id: int, limit: int = 100) -> list[DecisionRecord]:
        """The newest `limit` decision records of a rollout, newest first."""
        rollouts.check_id(rollout_id)
        with self.database.read() as conn:
            return rollouts.decisions(conn, rollout_id, limit)

    def acquire_lease(
        self, rollout_id: int, owner: str, ttl_s: float, now: datetime | None = None
    ) -> bool:
        """Take or renew the lease on an active rollout; False while another owner's is fresh.

        A controller drives a rollout only while it holds the lease, renewing it well before
        `ttl_s` runs out. Once a lease expires (its controller died), another may take over.
        A change of owner bumps the generation: the old owner's pending updates then fail
        with ConflictError instead of landing late, so re-read the rollout after acquiring.
        `now` is the caller's clock (injectable for tests); leases compare it with the
        stored expiry, so controllers' clocks must roughly agree.
        """
        rollouts.check_id(rollout_id)
        rollouts.check_text(owner, "the lease owner", limit=rollouts.ACTOR_LIMIT, empty=False)
        when = rollouts.check_when(now, "now") if now is not None else utcnow()
        with self.database.write() as conn:
            record = rollouts.get(conn, rollout_id)
            values = rollouts.lease_values(record, owner, ttl_s, when)
            if values is None:
                return False
            if record.lease_owner == owner:
                update = rollouts.rollouts_table.update()
                conn.execute(
                    update.where(rollouts.rollouts_table.c.id == rollout_id).values(**values)
                )
                return True
            rollouts.compare_and_set(conn, rollout_id, record.generation, values)
            details = {
                "rollout": rollout_id,
                "owner": owner,
                "previous_owner": record.lease_owner,
                "until": values["lease_until"].isoformat(),
            }
            self._record(conn, owner, "rollout.lease", record.deployment, details)
            return True

    def release_lease(self, rollout_id: int, owner: str) -> bool:
        """Give the lease up (a controller shutting down cleanly); False if `owner` lacks it."""
        rollouts.check_id(rollout_id)
        rollouts.check_text(owner, "the lease owner", limit=rollouts.ACTOR_LIMIT, empty=False)
        with self.database.write() as conn:
            record = rollouts.get(conn, rollout_id)
            if record.lease_owner != owner:
                return False
            table = rollouts.rollouts_table
            conn.execute(
                table.update()
                .where(table.c.id == rollout_id)
                .values(lease_owner=None, lease_until=None)
            )
            details = {"rollout": rollout_id, "owner": owner}
            self._record(conn, owner, "rollout.lease_released", record.deployment, details)
            return True

    def _apply(
        self,
        conn: Connection,
        name: str,
        spec: dict[str, Any],
        actor: str,
        reason: str,
        rollout_id: int,
        at: datetime,
    ) -> int:
        """Append `spec` as the deployment's next revision, audited as a deploy."""
        pinned = deployments.pin_spec(conn, spec)
        revision = deployments.deploy(
            conn, name, pinned, owner=actor, actor=actor, reason=reason, at=at
        )
        details = {"revision": revision.number, "reason": reason, "rollout": rollout_id}
        details["models"] = [v["model"] for v in pinned["variants"]]
        self._record(conn, actor, "deploy", name, details)
        return revision.number

    def _actor(self, actor: str | None) -> str:
        who = actor or self.settings.resolved_actor
        return rollouts.check_text(who, "the actor", limit=rollouts.ACTOR_LIMIT, empty=False)

    # API keys ---------------------------------------------------------------------------

    def keys(self, *, clock: Callable[[], datetime] | None = None) -> RegistryKeyStore:
        """This registry as a `shipyard.security.keys.KeyStore`, for create/authenticate_key.

        `clock` stamps revocations made through the store (tests); the database's UTC time
        otherwise.
        """
        return RegistryKeyStore(self, clock)

    def add_key(self, record: KeyRecord) -> None:
        """Store a new key record, audited as `key.create` by its `created_by`.

        Only the record is stored (its hash, never a plaintext key); ConflictError when the
        id is taken. Use `shipyard.security.keys.create_key(registry.keys(), ...)` to make one.
        """
        try:
            with self.database.write() as conn:
                key_records.insert(conn, record)
                details = key_records.created_details(record)
                target = key_records.audit_target(record.id)
                self._record(conn, record.created_by, "key.create", target, details)
        except DatabaseIntegrityError:
            # The primary key decided a race the write lock should have prevented.
            with self.database.read() as conn:
                if key_records.get(conn, record.id) is not None:
                    raise key_records.conflict() from None
            raise

    def get_key(self, key_id: str) -> KeyRecord | None:
        """The record with this public id, revoked or not; None when there is none."""
        with self.database.read() as conn:
            return key_records.get(conn, key_id)

    def revoke_key(
        self, key_id: str, *, actor: str | None = None, now: datetime | None = None
    ) -> KeyRecord:
        """Revoke the key now (or at `now`), audited as `key.revoke` by `actor`.

        Idempotent: revoking a revoked key returns it unchanged, keeps the first revocation
        and writes no audit entry (nothing changed). NotFoundError for an unknown id.
        """
        who = key_records.check_actor(actor or self.settings.resolved_actor)
        at = rollouts.check_when(now, "the revocation time") if now is not None else None
        with self.database.write() as conn:
            record, changed = key_records.revoke(conn, key_id, who, at or utcnow())
            if changed:
                details = key_records.revoked_details(record)
                target = key_records.audit_target(record.id)
                self._record(conn, who, "key.revoke", target, details)
            return record

    def list_keys(self) -> list[KeyRecord]:
        """Every key record, revoked and expired ones included, oldest first."""
        with self.database.read() as conn:
            return key_records.list_all(conn)

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
