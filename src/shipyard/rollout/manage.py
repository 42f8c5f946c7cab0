"""What a person (CLI or HTTP API) does to a rollout: start, pause, resume, approve, promote,
abort, roll back, and read its status and history.

Every act is one registry transaction that changes the rollout's state and, where traffic
moves, applies the new revision with it; every act names its actor and lands in the audit log.
Before any rollout or rollback the two versions' schemas are compared, and a breaking change
blocks the act unless it is forced with a recorded reason.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shipyard.bundle.compat import CompatReport, compare
from shipyard.bundle.manifest import Manifest
from shipyard.errors import ConflictError, NotFoundError, UserError
from shipyard.registry.registry import Registry
from shipyard.registry.rollouts import RolloutRecord
from shipyard.rollout.decide import RolloutState
from shipyard.rollout.explain import explain
from shipyard.rollout.plan import RolloutPlan
from shipyard.rollout.specs import final_spec, step_spec
from shipyard.routing import DeploymentSpec


def manifest_of(registry: Registry, ref: str) -> Manifest:
    return Manifest.from_text(registry.resolve(ref).manifest_yaml)


def check_compat(registry: Registry, current: str, target: str, *, allow_breaking: bool,
                 reason: str) -> CompatReport:
    """Compare the serving version with the one about to take its traffic."""
    report = compare(manifest_of(registry, current), manifest_of(registry, target))
    report.require(allow_breaking=allow_breaking, reason=reason)
    return report


def start(registry: Registry, name: str, plan: RolloutPlan, *, actor: str | None = None,
          reason: str = "") -> RolloutRecord:
    """Start `plan` on deployment `name`: the first step's revision commits with it."""
    current = registry.current_revision(name).spec
    DeploymentSpec.parse(current)
    champion = next((v["model"] for v in current["variants"]
                     if v.get("role", "champion") == "champion"), None)
    if champion is None:
        raise ConflictError(f"Deployment {name!r} has no champion to roll out against.",
                            hint=f"Deploy one first: shipyard deploy {name} --model REF.")
    candidates = [registry.resolve(ref).ref for ref in plan.candidates]
    for ref in candidates:
        check_compat(registry, champion, ref, allow_breaking=plan.compat.allow_breaking,
                     reason=plan.compat.reason)
    spec = step_spec(current, plan, 0, candidates)
    DeploymentSpec.parse(spec)  # a plan that makes an invalid spec fails before any write
    return registry.start_rollout(
        name, strategy=plan.strategy, plan=plan.to_json(), candidate=candidates[0],
        actor=actor, reason=reason or f"{plan.strategy} rollout of {candidates[0]}", spec=spec,
    )


def active(registry: Registry, name: str) -> RolloutRecord:
    record = registry.active_rollout(name)
    if record is None:
        raise NotFoundError(f"Deployment {name!r} has no active rollout.",
                            hint=f"Start one: shipyard rollout start {name} --strategy canary "
                            "--model REF.")
    return record


def pause(registry: Registry, name: str, *, actor: str | None = None,
          reason: str = "") -> RolloutRecord:
    record = active(registry, name)
    if record.status == "paused":
        return record
    registry.record_decision(record.id, rule="manual", outcome="pause", actor=actor,
                             reason=reason or "paused by hand")
    return registry.update_rollout(record.id, generation=record.generation, actor=actor,
                                   reason=reason or "paused", status="paused")


def resume(registry: Registry, name: str, *, actor: str | None = None,
           reason: str = "") -> RolloutRecord:
    record = active(registry, name)
    if record.status == "running":
        return record
    registry.record_decision(record.id, rule="manual", outcome="resume", actor=actor,
                             reason=reason or "resumed by hand")
    return registry.update_rollout(record.id, generation=record.generation, actor=actor,
                                   reason=reason or "resumed", status="running")


def approve(registry: Registry, name: str, *, actor: str | None = None,
            reason: str = "") -> RolloutRecord:
    """The owner's approval of the current step (steps with `approval: true` wait for it)."""
    record = active(registry, name)
    registry.record_decision(record.id, rule="approval", outcome="approve", actor=actor,
                             step=record.step, reason=reason or "approved by the owner")
    return record


def promote(registry: Registry, name: str, *, actor: str | None = None,
            reason: str = "") -> RolloutRecord:
    """Finish now: the candidate takes all traffic as the champion."""
    record = active(registry, name)
    baseline = registry.revisions(name)[record.baseline_revision - 1].spec
    registry.record_decision(record.id, rule="manual", outcome="promote_manual", actor=actor,
                             reason=reason or "promoted by hand")
    return registry.update_rollout(
        record.id, generation=record.generation, actor=actor, status="promoted",
        final_reason=reason or "promoted by hand",
        spec=final_spec(baseline, record.candidate, record.candidate_digest),
    )


def abort(registry: Registry, name: str, *, actor: str | None = None,
          reason: str = "") -> RolloutRecord:
    """Stop and put the baseline revision back (artifact, config and routing)."""
    record = active(registry, name)
    baseline = registry.revisions(name)[record.baseline_revision - 1].spec
    registry.record_decision(record.id, rule="manual", outcome="abort", actor=actor,
                             reason=reason or "aborted by hand")
    return registry.update_rollout(record.id, generation=record.generation, actor=actor,
                                   status="aborted", final_reason=reason or "aborted by hand",
                                   spec=baseline)


def rollback(registry: Registry, name: str, *, to: int | None = None,
             actor: str | None = None, reason: str = "", force: bool = False) -> Any:
    """Re-apply an earlier revision in one step, ending an active rollout on the way.

    The target's schemas are compared with what serves now; a breaking difference needs
    `force` and a reason."""
    revisions = registry.revisions(name)
    current = revisions[-1]
    number = to if to is not None else (current.number - 1)
    if not 1 <= number <= len(revisions):
        raise NotFoundError(f"Deployment {name!r} has no revision {number}.",
                            hint=f"Revisions run from 1 to {len(revisions)}: "
                            f"shipyard history {name}.")
    target = revisions[number - 1]
    now_ref, then_ref = _champion(current.spec), _champion(target.spec)
    require_artifacts(registry, target.spec)
    if now_ref and then_ref and now_ref != then_ref:
        if force and not reason.strip():
            raise UserError("A forced rollback needs a reason.",
                            hint="Say why with --reason; it is recorded.")
        check_compat(registry, now_ref, then_ref, allow_breaking=force, reason=reason)
    why = reason or f"rollback to revision {number}"
    record = registry.active_rollout(name)
    if record is not None:
        registry.record_decision(record.id, rule="manual", outcome="abort", actor=actor,
                                 reason=why)
        registry.update_rollout(record.id, generation=record.generation, actor=actor,
                                status="rolled_back", final_reason=why, spec=target.spec)
        return registry.current_revision(name)
    return registry.deploy(name, target.spec, actor=actor, reason=why)


def require_artifacts(registry: Registry, spec: dict[str, Any]) -> None:
    """Every file of every model the spec serves is still in the store: a rollback to an
    artifact that is gone is refused before anything changes."""
    for variant in spec.get("variants", []):
        record = registry.resolve(variant["model"])
        missing = [f.path for f in record.files if not registry.store.has(f.sha256, f.size)]
        if missing:
            raise NotFoundError(
                f"{record.ref} cannot be served again: {len(missing)} of its files are gone "
                f"from the artifact store (first: {missing[0][:100]}).",
                hint=f"Push {record.ref} again from its bundle, or roll back to another "
                "revision.",
            )


def _champion(spec: dict[str, Any]) -> str | None:
    return next((v["model"] for v in spec.get("variants", [])
                 if v.get("role", "champion") == "champion" and v.get("weight", 100) > 0),
                None)


def status(registry: Registry, name: str) -> dict[str, Any]:
    """The plan, the step, configured split, and the latest evaluation of every rule."""
    records = registry.rollouts(name)
    if not records:
        raise NotFoundError(f"Deployment {name!r} has never had a rollout.",
                            hint=f"Start one: shipyard rollout start {name} ...")
    record = records[-1]
    decisions = registry.decisions(record.id, limit=500)
    latest: dict[str, Any] = {}
    for decision in decisions:  # newest first: keep the first seen per rule and candidate
        latest.setdefault(f"{decision.rule}@{decision.candidate}", decision.to_dict())
    spec = registry.current_revision(name).spec
    return {
        "deployment": name,
        "rollout": record.to_dict(),
        "configured_split": {v["name"]: v.get("weight", 0) for v in spec["variants"]},
        "observed_split": (record.state or {}).get("observed_split"),
        "latest": list(latest.values()),
    }


def why(registry: Registry, name: str) -> str:
    records = registry.rollouts(name)
    if not records:
        raise NotFoundError(f"Deployment {name!r} has never had a rollout.",
                            hint="There is nothing to explain yet.")
    record = records[-1]
    head = f"Rollout {record.id} of {record.candidate} on {name}: {record.status}"
    if record.final_reason:
        head += f" ({record.final_reason})"
    return head + ".\n" + explain(list(reversed(registry.decisions(record.id, limit=500))))


def fresh_state(record: RolloutRecord) -> RolloutState:
    saved = record.state or {}
    if "decide" in saved:
        return RolloutState.from_json(saved["decide"])
    return RolloutState.start(record.step_started_at.timestamp())


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
