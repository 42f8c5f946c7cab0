"""Rollouts and their decision records: the state a rollout controller keeps in the registry.

A rollout moves one deployment from its baseline revision towards a candidate version. Its
row is the single source of truth a restarted controller continues from: status, step, the
controller's own `state`, and the lease that says which controller drives it now.

Three guards keep concurrent writers honest:
- at most one active (running|paused) rollout per deployment: checked under the write lock,
  and a partial unique index in the database as the backstop;
- compare-and-set on `generation`: every change names the generation it read and bumps it,
  so a controller and a human pressing "pause" can never overwrite each other unseen;
- leases: a controller owns a rollout while its lease is fresh; once it expires (a crash)
  another may take it over, and the takeover bumps the generation, so the old owner's
  pending writes fail instead of landing late.

Every function here runs inside the caller's transaction (`Database.write()` for changes);
auditing is the `Registry`'s job, in that same transaction.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, select

from shipyard.errors import ConflictError, NotFoundError, UserError
from shipyard.registry.records import Revision, VersionRecord, _Record
from shipyard.registry.tables import (
    ACTIVE_STATUSES,
    ROLLOUT_STATUSES,
    deployments,
    rollout_decisions,
    rollouts,
)

rollouts_table = rollouts  # the Registry's name for it: `rollouts` is the module there

STRATEGIES = ("direct", "shadow", "canary", "ab", "champion_challenger")
FINAL_STATUSES = tuple(s for s in ROLLOUT_STATUSES if s not in ACTIVE_STATUSES)
OUTCOMES = (
    "promote",
    "hold",
    "rollback",
    "insufficient_data",
    "pass",
    "fail",
    "approve",
    "pause",
    "resume",
    "abort",
    "promote_manual",
)
# Outcomes that are a person's act rather than an evaluation: audited as well as recorded.
MANUAL_OUTCOMES = ("approve", "pause", "resume", "abort", "promote_manual")
# What `update_rollout` may change; everything else is fixed when the rollout starts.
CHANGEABLE = ("status", "step", "step_started_at", "state", "final_reason")
# Bounds on caller-supplied text and JSON, so one bad call cannot bloat every later read.
PLAN_LIMIT = 256 * 1024
JSON_LIMIT = 64 * 1024
TEXT_LIMIT = 10_000
ACTOR_LIMIT = 200
ROLLOUTS_HINT = "Run `shipyard rollout status NAME` to see the deployment's rollout."


@dataclass(frozen=True, slots=True)
class RolloutRecord(_Record):
    """One rollout as stored; `generation` is what `update_rollout` must be handed back."""

    id: int
    deployment: str
    status: str
    strategy: str
    plan: dict[str, Any] = field(compare=False)
    step: int
    step_started_at: datetime
    baseline_revision: int
    revision: int
    candidate: str
    candidate_digest: str
    champion: str | None
    champion_digest: str | None
    state: dict[str, Any] = field(compare=False)
    reason: str
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    generation: int
    lease_owner: str | None
    lease_until: datetime | None
    final_reason: str | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    def lease_held(self, now: datetime) -> bool:
        """True while some controller's lease is still fresh at `now`."""
        return (
            self.lease_owner is not None
            and self.lease_until is not None
            and (self.lease_until > now)
        )


@dataclass(frozen=True, slots=True)
class DecisionRecord(_Record):
    """One evaluation (or manual act) of a rollout: what was measured and what it decided."""

    id: int
    rollout_id: int
    at: datetime
    step: int
    rule: str
    outcome: str
    measured: dict[str, Any] = field(compare=False)
    samples: dict[str, Any] = field(compare=False)
    dry_run: bool
    actor: str
    champion: str | None
    champion_digest: str | None
    candidate: str
    candidate_digest: str | None
    reason: str


# Checks on caller input ------------------------------------------------------------------


def check_text(value: Any, what: str, *, limit: int, empty: bool = True) -> str:
    """Text that both databases store as given: bounded, UTF-8 encodable, no NUL."""
    if not isinstance(value, str):
        raise UserError(f"Got {type(value).__name__} for {what}. Expected text.", hint=_API_HINT)
    if not empty and not value.strip():
        raise UserError(f"Got an empty {what}. Expected some text.", hint=_API_HINT)
    if len(value) > limit:
        raise UserError(
            f"Got {len(value)} characters for {what}. Expected at most {limit}.",
            hint="Shorten it; put long evidence in the measured values instead.",
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"Got {what} that is not valid Unicode.", hint=_API_HINT) from None
    if "\x00" in value:
        raise UserError(f"Got a NUL character in {what}. Expected plain text.", hint=_API_HINT)
    return value


def json_text(value: Any, what: str, *, limit: int = JSON_LIMIT) -> str:
    """Canonical JSON text of a mapping, refusing what would not read back the same."""
    if not isinstance(value, dict):
        raise UserError(
            f"Got {type(value).__name__} for {what}. Expected a mapping.", hint=_API_HINT
        )
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"Got {what} that is not plain JSON ({exc}).",
            hint="Use mappings, lists, text, finite numbers, booleans and null only "
            "(None, not NaN, for a value with no data).",
        ) from None
    return check_text(text, what, limit=limit)


def check_when(value: Any, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise UserError(
            f"Got {value!r} for {what}. Expected a timezone-aware datetime.",
            hint="Use datetime.now(UTC).",
        )
    return value


def is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in HEX for c in value)


def check_id(value: Any, what: str = "rollout id") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
        raise UserError(f"Got {value!r} for {what}. Expected a positive integer.", hint="")
    return value


def check_flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"Got {value!r} for {what}. Expected true or false.", hint=_API_HINT)
    return value


def check_step(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10_000:
        raise UserError(f"Got {value!r} for a rollout step. Expected 0 or more.", hint=_API_HINT)
    return value


def pinned_versions(
    role: str, ref: str | None, digest: str | None, pinned: str | None, pinned_digest: str | None
) -> dict[str, str | None]:
    """The `role` and `role_digest` columns: as given, or the ones the rollout pinned."""
    if ref is None:
        return {role: pinned, f"{role}_digest": pinned_digest}
    check_text(ref, f"the {role} version", limit=200, empty=False)
    if digest is not None and not is_digest(digest):
        raise UserError(
            f"Got {str(digest)[:80]!r} for the {role} digest. Expected 64 hex digits.",
            hint="Pass the manifest sha256 from the version record.",
        )
    return {role: ref, f"{role}_digest": digest}


HEX = frozenset("0123456789abcdef")
_API_HINT = "This is a bug in the caller of the registry's rollout API; report it."


# Reads -------------------------------------------------------------------------------------


def deployment_id(conn: Connection, name: str) -> int:
    found = conn.execute(select(deployments.c.id).where(deployments.c.name == name)).first()
    if found is None:
        raise NotFoundError(
            f"Got {name!r} for a deployment, but the registry has no deployment by that name.",
            hint=f"Deploy it first with `shipyard deploy {name} ...`, then start a rollout.",
            deployment=name,
        )
    return int(found.id)


def _query() -> Any:
    return select(rollouts, deployments.c.name.label("deployment")).join(
        deployments, deployments.c.id == rollouts.c.deployment_id
    )


def get(conn: Connection, rollout_id: int) -> RolloutRecord:
    row = conn.execute(_query().where(rollouts.c.id == rollout_id)).first()
    if row is None:
        raise NotFoundError(
            f"Got rollout id {rollout_id}, but the registry has no rollout with that id.",
            hint="Run `shipyard rollout status NAME` to see a deployment's rollouts.",
            rollout=rollout_id,
        )
    return _rollout(row)


def active(conn: Connection, name: str) -> RolloutRecord | None:
    found = deployment_id(conn, name)
    query = _query().where(
        rollouts.c.deployment_id == found, rollouts.c.status.in_(ACTIVE_STATUSES)
    )
    row = conn.execute(query).first()
    return None if row is None else _rollout(row)


def history(conn: Connection, name: str) -> list[RolloutRecord]:
    found = deployment_id(conn, name)
    query = _query().where(rollouts.c.deployment_id == found).order_by(rollouts.c.id)
    return [_rollout(row) for row in conn.execute(query)]


def decisions(conn: Connection, rollout_id: int, limit: int) -> list[DecisionRecord]:
    get(conn, rollout_id)  # NotFoundError for an unknown rollout, not a silent []
    query = (
        select(rollout_decisions)
        .where(rollout_decisions.c.rollout_id == rollout_id)
        .order_by(rollout_decisions.c.id.desc())
        .limit(max(0, limit))
    )
    return [_decision(row) for row in conn.execute(query)]


# Writes (inside Database.write()) ------------------------------------------------------------


def insert(
    conn: Connection,
    *,
    deployment: int,
    strategy: str,
    plan_text: str,
    baseline: Revision,
    candidate: VersionRecord,
    actor: str,
    reason: str,
    at: datetime,
) -> int:
    """Add a running rollout at step 0 (call `check_none_active` first)."""
    champion = champion_of(baseline.spec)
    values = {
        "deployment_id": deployment,
        "status": "running",
        "strategy": strategy,
        "plan": plan_text,
        "step": 0,
        "step_started_at": at,
        "baseline_revision": baseline.number,
        "revision": baseline.number,
        "candidate": candidate.ref,
        "candidate_digest": candidate.digest,
        "champion": champion[0] if champion else None,
        "champion_digest": champion[1] if champion else None,
        "state": "{}",
        "reason": reason,
        "created_at": at,
        "created_by": actor,
        "updated_at": at,
        "updated_by": actor,
        "generation": 1,
    }
    return int(
        conn.execute(rollouts.insert().values(**values).returning(rollouts.c.id)).scalar_one()
    )


def check_none_active(conn: Connection, deployment: int, name: str) -> None:
    """ConflictError when the deployment already has a running or paused rollout."""
    current = conn.execute(
        select(rollouts.c.id, rollouts.c.status).where(
            rollouts.c.deployment_id == deployment, rollouts.c.status.in_(ACTIVE_STATUSES)
        )
    ).first()
    if current is not None:
        raise already_active(name, current.id, current.status)


def already_active(name: str, rollout_id: int, status: str) -> ConflictError:
    return ConflictError(
        f"Got a new rollout for deployment {name!r}, but rollout {rollout_id} is still "
        f"{status} on it. Expected at most one active rollout per deployment.",
        hint=f"Finish it first: `shipyard rollout promote {name}` or `shipyard rollout abort "
        f"{name}`. {ROLLOUTS_HINT.replace('NAME', name)}",
        deployment=name,
        rollout=rollout_id,
    )


def champion_of(spec: dict[str, Any]) -> tuple[str, str | None] | None:
    """The baseline's champion (NAME:VERSION, digest): the one variant in the champion role."""
    champions = [
        v
        for v in spec.get("variants", [])
        if isinstance(v, dict) and v.get("role", "champion") == "champion"
    ]
    if len(champions) != 1 or not isinstance(champions[0].get("model"), str):
        return None  # none or several: the decision records name the champion themselves
    digest = champions[0].get("version_digest")
    return champions[0]["model"], digest if isinstance(digest, str) else None


def check_changes(record: RolloutRecord, changes: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The column values for `changes`, refusing unknown fields and illegal transitions."""
    unknown = sorted(set(changes) - set(CHANGEABLE))
    if unknown:
        raise UserError(
            f"Got {', '.join(unknown)} to change on rollout {record.id}. Expected only "
            f"{', '.join(CHANGEABLE)}.",
            hint=_API_HINT,
        )
    if not record.active:
        raise ConflictError(
            f"Got a change to rollout {record.id}, but it is {record.status}, which is final.",
            hint="Start a new rollout instead. " + ROLLOUTS_HINT.replace("NAME", record.deployment),
            rollout=record.id,
            status=record.status,
        )
    values: dict[str, Any] = {}
    status = changes.get("status", record.status)
    if status not in ROLLOUT_STATUSES:
        raise UserError(
            f"Got {status!r} for a rollout status. Expected one of {', '.join(ROLLOUT_STATUSES)}.",
            hint=_API_HINT,
        )
    values["status"] = status
    if "step" in changes:
        step = check_step(changes["step"])
        values["step"] = step
        if step != record.step:
            values["step_started_at"] = at  # a new step starts its clock now, unless told
    if "step_started_at" in changes:
        values["step_started_at"] = check_when(changes["step_started_at"], "step_started_at")
    if "state" in changes:
        values["state"] = json_text(changes["state"], "the controller state", limit=PLAN_LIMIT)
    final_reason = changes.get("final_reason")
    if status in FINAL_STATUSES:
        # "Why did it end?" must always have an answer: `shipyard rollout explain` shows it.
        values["final_reason"] = check_text(
            final_reason or "", "the final reason", limit=TEXT_LIMIT, empty=False
        )
        values["lease_owner"] = values["lease_until"] = None  # nothing left to drive
    elif final_reason is not None:
        raise UserError(
            f"Got a final_reason for rollout {record.id}, but its status stays {status}. "
            "Expected a final status (promoted, rolled_back, aborted, failed) with it.",
            hint=_API_HINT,
        )
    return values


def compare_and_set(
    conn: Connection, rollout_id: int, generation: int, values: dict[str, Any]
) -> None:
    """Apply `values` only if the row is still at `generation`; bump it; else ConflictError."""
    done = conn.execute(
        rollouts.update()
        .where(rollouts.c.id == rollout_id, rollouts.c.generation == generation)
        .values(generation=rollouts.c.generation + 1, **values)
    )
    if done.rowcount != 1:
        now = conn.execute(select(rollouts.c.generation).where(rollouts.c.id == rollout_id))
        raise stale(rollout_id, generation, now.scalar())


def stale(rollout_id: int, generation: int, current: int | None) -> ConflictError:
    return ConflictError(
        f"Got generation {generation} for rollout {rollout_id}, but it is at generation "
        f"{current}: someone else changed it since it was read.",
        hint="Read the rollout again, decide again on what it says now, and retry.",
        rollout=rollout_id,
        generation=current,
    )


def lease_values(
    record: RolloutRecord, owner: str, ttl_s: float, now: datetime
) -> dict[str, Any] | None:
    """The lease columns if `owner` may hold the lease now, else None."""
    if (
        not isinstance(ttl_s, int | float)
        or isinstance(ttl_s, bool)
        or not (math.isfinite(ttl_s) and 0 < ttl_s <= 86_400)
    ):
        raise UserError(
            f"Got {ttl_s!r} for a lease's ttl_s. Expected seconds in (0, 86400].",
            hint="Use a few evaluation intervals, e.g. 3 x interval_s.",
        )
    if not record.active:
        return None
    if record.lease_owner not in (None, owner) and record.lease_held(now):
        return None
    return {"lease_owner": owner, "lease_until": now + timedelta(seconds=ttl_s)}


def insert_decision(conn: Connection, values: dict[str, Any]) -> DecisionRecord:
    decision_id = conn.execute(
        rollout_decisions.insert().values(**values).returning(rollout_decisions.c.id)
    ).scalar_one()
    row = conn.execute(select(rollout_decisions).where(rollout_decisions.c.id == decision_id))
    return _decision(row.one())


def _rollout(row: Row[Any]) -> RolloutRecord:
    return RolloutRecord(
        id=row.id,
        deployment=row.deployment,
        status=row.status,
        strategy=row.strategy,
        plan=json.loads(row.plan),
        step=row.step,
        step_started_at=row.step_started_at,
        baseline_revision=row.baseline_revision,
        revision=row.revision,
        candidate=row.candidate,
        candidate_digest=row.candidate_digest,
        champion=row.champion,
        champion_digest=row.champion_digest,
        state=json.loads(row.state),
        reason=row.reason,
        created_at=row.created_at,
        created_by=row.created_by,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
        generation=row.generation,
        lease_owner=row.lease_owner,
        lease_until=row.lease_until,
        final_reason=row.final_reason,
    )


def _decision(row: Row[Any]) -> DecisionRecord:
    return DecisionRecord(
        id=row.id,
        rollout_id=row.rollout_id,
        at=row.at,
        step=row.step,
        rule=row.rule,
        outcome=row.outcome,
        measured=json.loads(row.measured),
        samples=json.loads(row.samples),
        dry_run=bool(row.dry_run),
        actor=row.actor,
        champion=row.champion,
        champion_digest=row.champion_digest,
        candidate=row.candidate,
        candidate_digest=row.candidate_digest,
        reason=row.reason,
    )
