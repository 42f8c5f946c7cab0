"""Rollouts in the registry: start, compare-and-set updates, transitions and leases.

Every test runs on SQLite and on the real PostgreSQL (the `registry` fixture).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shipyard.errors import BadReferenceError, ConflictError, NotFoundError, UserError
from shipyard.registry import Registry
from shipyard.registry.rollouts import RolloutRecord

MakeBundle = Callable[..., Path]
PLAN = {"strategy": "canary", "steps": [{"weight": 5}, {"weight": 50}], "rules": []}
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _spec(*variants: tuple[str, str, str, float]) -> dict[str, Any]:
    return {
        "variants": [
            {"name": name, "model": model, "role": role, "weight": weight}
            for name, model, role, weight in variants
        ]
    }


CANARY_5 = _spec(("champion", "iris:1.0", "champion", 95), ("canary", "iris:2.0", "canary", 5))


@pytest.fixture
def web(registry: Registry, make_bundle: MakeBundle) -> Registry:
    """Deployment `web` at revision 1 serving iris:1.0; iris:2.0 pushed as the candidate."""
    registry.push(make_bundle(version="1.0", content=b"1"))
    registry.push(make_bundle(version="2.0", content=b"2"))
    registry.set_alias("iris", "staging", "2.0")
    registry.deploy("web", _spec(("champion", "iris:1.0", "champion", 100)), actor="ana")
    return registry


def _start(registry: Registry, **extra: Any) -> RolloutRecord:
    arguments: dict[str, Any] = {
        "strategy": "canary",
        "plan": PLAN,
        "candidate": "iris:2.0",
        "actor": "ana",
        "reason": "retrained",
    }
    return registry.start_rollout("web", **{**arguments, **extra})


def _written(registry: Registry) -> tuple[int, int, int]:
    """What a refused call must leave untouched: audit entries, revisions, rollouts."""
    rollouts = registry.rollouts("web") if registry.deployments() else []
    revisions = registry.revisions("web") if registry.deployments() else []
    return registry.verify_audit().entries, len(revisions), len(rollouts)


# Start ----------------------------------------------------------------------------------


def test_a_rollout_starts_running_at_step_zero_with_everything_pinned(web: Registry) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    started = _start(web, candidate="iris@staging")
    one, two = web.resolve("iris:1.0"), web.resolve("iris:2.0")
    assert (started.deployment, started.status, started.strategy) == ("web", "running", "canary")
    assert (started.step, started.generation, started.plan) == (0, 1, PLAN)
    assert (started.baseline_revision, started.revision) == (1, 1)
    assert (started.candidate, started.candidate_digest) == ("iris:2.0", two.digest)
    assert (started.champion, started.champion_digest) == ("iris:1.0", one.digest)
    assert started.state == {} and started.reason == "retrained"
    assert started.created_by == started.updated_by == "ana"
    assert started.step_started_at >= before and started.step_started_at.tzinfo is not None
    assert started.lease_owner is None and started.final_reason is None and started.active
    assert web.active_rollout("web") == started
    assert web.rollouts("web") == [started]
    assert web.rollout(started.id) == started
    entry = web.audit(target="web")[0]
    assert (entry.action, entry.actor) == ("rollout.start", "ana")
    assert entry.details == {
        "rollout": started.id,
        "strategy": "canary",
        "candidate": "iris:2.0",
        "baseline_revision": 1,
        "reason": "retrained",
    }
    assert started.to_dict()["step_started_at"] == started.step_started_at.isoformat()


def test_a_start_can_apply_its_first_step_in_the_same_transaction(web: Registry) -> None:
    started = _start(web, spec=CANARY_5)
    assert (started.baseline_revision, started.revision, started.generation) == (1, 2, 1)
    current = web.current_revision("web")
    assert current.number == 2 and current.reason == "retrained"
    assert [v["weight"] for v in current.spec["variants"]] == [95, 5]
    assert [e.action for e in web.audit(target="web", limit=2)] == ["rollout.start", "deploy"]
    assert web.audit(target="web", limit=2)[1].details["rollout"] == started.id


def test_no_champion_is_pinned_when_the_baseline_has_several(web: Registry) -> None:
    web.deploy("web", _spec(("a", "iris:1.0", "champion", 50), ("b", "iris:2.0", "champion", 50)))
    started = _start(web)
    assert (started.champion, started.champion_digest) == (None, None)
    assert started.baseline_revision == 2


def test_a_second_active_rollout_is_a_conflict_and_writes_nothing(web: Registry) -> None:
    first = _start(web)
    before = _written(web)
    with pytest.raises(ConflictError, match=f"rollout {first.id} is still running") as caught:
        _start(web, spec=CANARY_5)
    assert caught.value.status == 409 and "rollout abort web" in caught.value.hint
    assert _written(web) == before
    paused = web.update_rollout(first.id, generation=1, status="paused", actor="bo")
    with pytest.raises(ConflictError, match="still paused"):
        _start(web)
    web.update_rollout(first.id, generation=paused.generation, status="aborted", reason="stop")
    second = _start(web)
    assert [r.id for r in web.rollouts("web")] == [first.id, second.id]
    assert web.active_rollout("web") == second


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"strategy": "blue_green"}, UserError, "rollout strategy"),
        ({"strategy": None}, UserError, "rollout strategy"),
        ({"plan": ["canary"]}, UserError, "Expected a mapping"),
        ({"plan": {"weight": float("nan")}}, UserError, "not plain JSON"),
        ({"plan": {"when": object()}}, UserError, "not plain JSON"),
        ({"plan": {"big": "x" * 300_000}}, UserError, "at most"),
        ({"plan": {"bad": "\ud800"}}, UserError, "not valid Unicode"),
        ({"reason": "a\x00b"}, UserError, "NUL"),
        ({"reason": "y" * 20_000}, UserError, "at most"),
        ({"actor": "z" * 201}, UserError, "the actor"),
        ({"candidate": "ghost:1.0"}, NotFoundError, "ghost"),
        ({"candidate": "iris:9.9"}, NotFoundError, "9.9"),
        ({"candidate": "iris:../x"}, BadReferenceError, ""),
        ({"candidate": "iris@nope"}, NotFoundError, "nope"),
        ({"spec": {"variants": []}}, UserError, "variants"),
        ({"spec": _spec(("c", "ghost:1", "champion", 100))}, NotFoundError, "ghost"),
    ],
)
def test_bad_starts_are_refused_and_change_nothing(
    web: Registry, change: dict[str, Any], error: type[Exception], match: str
) -> None:
    before = _written(web)
    with pytest.raises(error, match=match):
        _start(web, **change)
    assert _written(web) == before and web.active_rollout("web") is None


def test_unknown_deployments_and_rollouts_are_not_found(web: Registry) -> None:
    with pytest.raises(NotFoundError, match="no deployment"):
        web.start_rollout("ghost", strategy="canary", plan={}, candidate="iris:2.0")
    with pytest.raises(NotFoundError):
        web.active_rollout("ghost")
    with pytest.raises(NotFoundError):
        web.rollouts("ghost")
    for missing in (12345, 2**31 - 1):
        with pytest.raises(NotFoundError, match="no rollout"):
            web.rollout(missing)
        with pytest.raises(NotFoundError):
            web.decisions(missing)
        with pytest.raises(NotFoundError):
            web.update_rollout(missing, generation=1, step=1)
    for bad in (0, -1, True, "1", 2**31, 1.0):
        with pytest.raises(UserError, match="rollout id"):
            web.rollout(bad)  # type: ignore[arg-type]
    with pytest.raises(BadReferenceError):
        web.active_rollout("Bad Name")
    assert web.rollouts("web") == []


# Compare-and-set updates and transitions ------------------------------------------------------


def test_an_update_is_compare_and_set_on_the_generation(web: Registry) -> None:
    started = _start(web)
    moved = web.update_rollout(started.id, generation=1, step=1, actor="ctl", reason="passed")
    assert (moved.step, moved.generation, moved.updated_by) == (1, 2, "ctl")
    assert moved.step_started_at > started.step_started_at  # a new step restarts its clock
    with pytest.raises(ConflictError, match="generation 1 .* at generation 2") as caught:
        web.update_rollout(started.id, generation=1, status="paused", actor="bo")
    assert caught.value.details["generation"] == 2
    assert web.rollout(started.id) == moved
    entry = web.audit(target="web")[0]
    assert (entry.action, entry.actor) == ("rollout.step", "ctl")
    assert entry.details == {
        "rollout": started.id,
        "reason": "passed",
        "from": "running",
        "to": "running",
        "step": 1,
    }


def test_state_and_step_clock_round_trip(web: Registry) -> None:
    started = _start(web)
    state = {"latched": ["error_rate"], "failures": {"p99": 2}, "approved": False, "x": None}
    updated = web.update_rollout(started.id, generation=1, state=state, step_started_at=T0, step=0)
    assert updated.state == state and updated.step_started_at == T0
    assert web.audit(target="web")[0].action == "rollout.update"


def test_pause_resume_and_a_final_status_that_is_never_left(web: Registry) -> None:
    started = _start(web)
    paused = web.update_rollout(started.id, generation=1, status="paused", actor="bo")
    resumed = web.update_rollout(started.id, generation=2, status="running", actor="bo")
    assert (paused.status, resumed.status, resumed.generation) == ("paused", "running", 3)
    assert web.acquire_lease(started.id, "ctl-1", 60)
    lease_gen = web.rollout(started.id).generation
    done = web.update_rollout(
        started.id, generation=lease_gen, status="promoted", reason="all steps passed"
    )
    assert (done.status, done.final_reason, done.active) == ("promoted", "all steps passed", False)
    assert done.lease_owner is None and done.lease_until is None
    assert web.active_rollout("web") is None
    for change in ({"status": "running"}, {"step": 2}, {"status": "rolled_back"}):
        with pytest.raises(ConflictError, match="final"):
            web.update_rollout(started.id, generation=done.generation, reason="x", **change)
    assert web.rollout(started.id) == done
    actions = [e.action for e in web.audit(target="web", limit=5)]
    assert actions == [
        "rollout.promoted",
        "rollout.lease",
        "rollout.running",
        "rollout.paused",
        "rollout.start",
    ]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"status": "aborted"}, "final reason"),
        ({"status": "failed", "final_reason": "   "}, "final reason"),
        ({"final_reason": "why"}, "final status"),
        ({"status": "done"}, "rollout status"),
        ({"status": None}, "rollout status"),
        ({"step": -1}, "step"),
        ({"step": True}, "step"),
        ({"step": "1"}, "step"),
        ({"step_started_at": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"state": ["x"]}, "mapping"),
        ({"state": {"v": float("inf")}}, "not plain JSON"),
        ({"strategy": "ab"}, "Expected only"),
        ({"candidate": "iris:1.0"}, "Expected only"),
        ({"lease_owner": "me"}, "Expected only"),
        ({}, "no change"),
    ],
)
def test_bad_updates_are_refused_and_change_nothing(
    web: Registry, changes: dict[str, Any], match: str
) -> None:
    started = _start(web)
    before = _written(web)
    with pytest.raises(UserError, match=match):
        web.update_rollout(started.id, generation=1, **changes)
    assert web.rollout(started.id) == started and _written(web) == before


@pytest.mark.parametrize("generation", [0, -1, True, "1", None])
def test_a_malformed_generation_is_refused(web: Registry, generation: Any) -> None:
    started = _start(web)
    with pytest.raises(UserError, match="generation"):
        web.update_rollout(started.id, generation=generation, step=1)


def test_a_rollback_reapplies_the_baseline_with_the_status_change(web: Registry) -> None:
    started = _start(web, spec=CANARY_5)
    baseline = web.revisions("web")[started.baseline_revision - 1]
    rolled = web.update_rollout(
        started.id,
        generation=1,
        status="rolled_back",
        spec=baseline.spec,
        actor="ctl",
        reason="error_rate 9% > 1%",
    )
    assert (rolled.status, rolled.revision, rolled.final_reason) == (
        "rolled_back",
        3,
        "error_rate 9% > 1%",
    )
    current = web.current_revision("web")
    assert current.spec == baseline.spec and current.actor == "ctl"
    newest = web.audit(target="web", limit=2)
    assert [e.action for e in newest] == ["rollout.rolled_back", "deploy"]
    assert newest[0].details["revision"] == 3 and newest[0].details["to"] == "rolled_back"
    assert web.verify_audit().ok


def test_a_spec_that_fails_leaves_the_rollout_and_the_deployment_as_they_were(
    web: Registry,
) -> None:
    started = _start(web)
    before = _written(web)
    bad = _spec(("champion", "iris:1.0", "champion", 100))
    bad["variants"][0]["version_digest"] = "0" * 64
    with pytest.raises(ConflictError, match="version_digest"):
        web.update_rollout(started.id, generation=1, step=1, spec=bad)
    assert web.rollout(started.id) == started and _written(web) == before


# Leases -------------------------------------------------------------------------------------


def test_a_lease_is_held_renewed_refused_to_others_and_taken_over_once_expired(
    web: Registry,
) -> None:
    started = _start(web)
    assert web.acquire_lease(started.id, "ctl-a", 30, now=T0)
    held = web.rollout(started.id)
    assert (held.lease_owner, held.lease_until, held.generation) == (
        "ctl-a",
        T0 + timedelta(seconds=30),
        2,  # a new owner bumps the generation
    )
    assert held.lease_held(T0 + timedelta(seconds=29))
    assert not held.lease_held(T0 + timedelta(seconds=30))
    assert not web.acquire_lease(started.id, "ctl-b", 30, now=T0 + timedelta(seconds=29))
    assert web.acquire_lease(started.id, "ctl-a", 30, now=T0 + timedelta(seconds=20))
    renewed = web.rollout(started.id)
    assert renewed.lease_until == T0 + timedelta(seconds=50) and renewed.generation == 2
    assert not web.acquire_lease(started.id, "ctl-b", 30, now=T0 + timedelta(seconds=49))
    # ctl-a dies; once its lease runs out, ctl-b takes over.
    assert web.acquire_lease(started.id, "ctl-b", 30, now=T0 + timedelta(seconds=50))
    taken = web.rollout(started.id)
    assert (taken.lease_owner, taken.generation) == ("ctl-b", 3)
    # The dead owner's late write, made with the generation it read, is fenced off.
    with pytest.raises(ConflictError):
        web.update_rollout(started.id, generation=2, step=1, actor="ctl-a")
    assert web.rollout(started.id) == taken
    lease = web.audit(target="web")[0]
    assert (lease.action, lease.actor) == ("rollout.lease", "ctl-b")
    assert lease.details["previous_owner"] == "ctl-a"


def test_a_released_lease_can_be_taken_at_once(web: Registry) -> None:
    started = _start(web)
    assert web.acquire_lease(started.id, "ctl-a", 600, now=T0)
    assert not web.release_lease(started.id, "ctl-b")
    assert web.release_lease(started.id, "ctl-a")
    assert not web.release_lease(started.id, "ctl-a")
    assert web.rollout(started.id).lease_owner is None
    assert web.acquire_lease(started.id, "ctl-b", 600, now=T0)
    assert web.audit(target="web")[1].action == "rollout.lease_released"


def test_no_lease_on_a_finished_rollout(web: Registry) -> None:
    started = _start(web)
    web.update_rollout(started.id, generation=1, status="aborted", reason="owner said no")
    assert not web.acquire_lease(started.id, "ctl-a", 60)
    assert web.rollout(started.id).lease_owner is None


@pytest.mark.parametrize(
    ("owner", "ttl_s", "now", "match"),
    [
        ("", 30, T0, "empty"),
        ("x" * 201, 30, T0, "at most"),
        (None, 30, T0, "Expected text"),
        ("ctl", 0, T0, "ttl_s"),
        ("ctl", -5, T0, "ttl_s"),
        ("ctl", float("nan"), T0, "ttl_s"),
        ("ctl", float("inf"), T0, "ttl_s"),
        ("ctl", True, T0, "ttl_s"),
        ("ctl", "30", T0, "ttl_s"),
        ("ctl", 30, datetime(2030, 1, 1), "timezone-aware"),
    ],
)
def test_bad_lease_requests_are_refused(
    web: Registry, owner: Any, ttl_s: Any, now: datetime, match: str
) -> None:
    started = _start(web)
    with pytest.raises(UserError, match=match):
        web.acquire_lease(started.id, owner, ttl_s, now=now)
    assert web.rollout(started.id) == started
