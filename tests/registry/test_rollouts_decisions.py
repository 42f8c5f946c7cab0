"""Decision records: what each evaluation measured and decided, append-only in the database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from shipyard.errors import NotFoundError, UserError
from shipyard.registry import Registry
from shipyard.registry.rollouts import RolloutRecord

MakeBundle = Callable[..., Path]
T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def started(registry: Registry, make_bundle: MakeBundle) -> tuple[Registry, RolloutRecord]:
    registry.push(make_bundle(version="1.0", content=b"1"))
    registry.push(make_bundle(version="2.0", content=b"2"))
    spec = {"variants": [{"name": "champion", "model": "iris:1.0", "weight": 100}]}
    registry.deploy("web", spec, actor="ana")
    rollout = registry.start_rollout(
        "web", strategy="canary", plan={"steps": [5, 100]}, candidate="iris:2.0", actor="ana"
    )
    return registry, rollout


def test_a_decision_keeps_measurements_samples_and_both_versions(
    started: tuple[Registry, RolloutRecord],
) -> None:
    registry, rollout = started
    measured = {"candidate": 0.091, "champion": 0.004, "threshold": 0.01, "p": None}
    samples = {"candidate": 412, "champion": 7830}
    decision = registry.record_decision(
        rollout.id,
        rule="error_rate",
        outcome="fail",
        measured=measured,
        samples=samples,
        reason="error rate 9.1% > 1% over 412 requests",
        actor="controller",
        at=T0,
    )
    assert (decision.rollout_id, decision.step, decision.rule) == (rollout.id, 0, "error_rate")
    assert (decision.outcome, decision.dry_run, decision.actor) == ("fail", False, "controller")
    assert decision.measured == measured and decision.samples == samples
    assert decision.at == T0
    assert (decision.champion, decision.champion_digest) == (
        "iris:1.0",
        registry.resolve("iris:1.0").digest,
    )
    assert (decision.candidate, decision.candidate_digest) == (
        "iris:2.0",
        registry.resolve("iris:2.0").digest,
    )
    assert registry.decisions(rollout.id) == [decision]
    assert decision.to_dict()["at"] == T0.isoformat()
    # An evaluation is evidence, not an act: the audit log is not flooded with it.
    assert registry.audit(target="web")[0].action == "rollout.start"


def test_decisions_come_newest_first_and_respect_the_limit(
    started: tuple[Registry, RolloutRecord],
) -> None:
    registry, rollout = started
    for step, outcome in enumerate(["pass", "insufficient_data", "hold", "promote"]):
        registry.record_decision(rollout.id, rule="step", outcome=outcome, step=step)
    assert [d.outcome for d in registry.decisions(rollout.id)] == [
        "promote",
        "hold",
        "insufficient_data",
        "pass",
    ]
    assert [d.step for d in registry.decisions(rollout.id, limit=2)] == [3, 2]
    assert registry.decisions(rollout.id, limit=0) == []
    assert registry.decisions(rollout.id, limit=-5) == []


def test_explicit_versions_and_dry_runs_are_kept_as_given(
    started: tuple[Registry, RolloutRecord],
) -> None:
    registry, rollout = started
    decision = registry.record_decision(
        rollout.id,
        rule="drift.inputs",
        outcome="fail",
        dry_run=True,
        champion="iris:0.9",
        champion_digest=None,
        candidate="iris:2.0",
        candidate_digest="a" * 64,
    )
    assert decision.dry_run is True
    assert (decision.champion, decision.champion_digest) == ("iris:0.9", None)
    assert decision.candidate_digest == "a" * 64


def test_manual_acts_are_audited_with_their_actor(started: tuple[Registry, RolloutRecord]) -> None:
    registry, rollout = started
    decision = registry.record_decision(
        rollout.id, rule="manual", outcome="approve", actor="owner-ola", reason="looks right"
    )
    entry = registry.audit(target="web")[0]
    assert (entry.action, entry.actor) == ("rollout.approve", "owner-ola")
    assert entry.details == {
        "rollout": rollout.id,
        "decision": decision.id,
        "reason": "looks right",
    }
    assert registry.verify_audit().ok


def test_a_finished_rollout_still_takes_decision_records(
    started: tuple[Registry, RolloutRecord],
) -> None:
    registry, rollout = started
    registry.update_rollout(rollout.id, generation=1, status="aborted", reason="stop")
    registry.record_decision(rollout.id, rule="manual", outcome="abort", reason="stop")
    assert [d.outcome for d in registry.decisions(rollout.id)] == ["abort"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"outcome": "rollforward"}, "decision outcome"),
        ({"outcome": None}, "decision outcome"),
        ({"rule": ""}, "empty"),
        ({"rule": "r" * 201}, "at most"),
        ({"rule": "a\x00"}, "NUL"),
        ({"measured": {"p": float("nan")}}, "not plain JSON"),
        ({"measured": [1, 2]}, "mapping"),
        ({"samples": []}, "mapping"),
        ({"samples": {"n": b"12"}}, "not plain JSON"),
        ({"measured": {"x": "y" * 70_000}}, "at most"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"step": -1}, "step"),
        ({"step": 1.5}, "step"),
        ({"at": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"champion": "iris:1", "champion_digest": "XYZ"}, "64 hex"),
        ({"candidate": "iris:2", "candidate_digest": "A" * 64}, "64 hex"),
        ({"candidate": ""}, "empty"),
        ({"actor": "x" * 500}, "the actor"),
    ],
)
def test_bad_decisions_are_refused_and_write_nothing(
    started: tuple[Registry, RolloutRecord], change: dict[str, Any], match: str
) -> None:
    registry, rollout = started
    entries = registry.verify_audit().entries
    arguments: dict[str, Any] = {"rule": "error_rate", "outcome": "pass", **change}
    with pytest.raises(UserError, match=match):
        registry.record_decision(rollout.id, **arguments)
    assert registry.decisions(rollout.id) == [] and registry.verify_audit().entries == entries


def test_decisions_on_an_unknown_rollout_are_not_found(
    started: tuple[Registry, RolloutRecord],
) -> None:
    registry, rollout = started
    with pytest.raises(NotFoundError):
        registry.record_decision(rollout.id + 100, rule="r", outcome="pass")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE rollout_decisions SET outcome = 'pass'",
        "UPDATE rollout_decisions SET measured = '{}' WHERE id = 1",
        "DELETE FROM rollout_decisions",
    ],
)
def test_the_database_refuses_to_rewrite_decisions(
    started: tuple[Registry, RolloutRecord], statement: str
) -> None:
    registry, rollout = started
    registry.record_decision(rollout.id, rule="error_rate", outcome="fail", reason="9% > 1%")
    with pytest.raises(DBAPIError, match="append-only"), registry.database.write() as conn:
        conn.execute(text(statement))
    [kept] = registry.decisions(rollout.id)
    assert (kept.outcome, kept.reason) == ("fail", "9% > 1%")
