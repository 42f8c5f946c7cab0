"""explain and decision records: "why was it rolled back?" in plain words."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rollout_evidence import NOW, arm, evidence

from shipyard.rollout.decide import RolloutState, decide
from shipyard.rollout.explain import explain
from shipyard.rollout.plan import RolloutPlan

PLAN = RolloutPlan.parse({
    "strategy": "canary", "model": "fraud:2",
    "steps": [{"weight": 10}, {"weight": 100}],
    "rules": ["error_rate < 0.01", {"when": "drift.inputs <= 1", "dry_run": True}],
})


def run(*error_counts: int) -> list[dict[str, Any]]:
    """Evaluate step 0 once per error count, a minute apart, keeping the records."""
    state, rows = RolloutState.start(NOW), []
    for i, errors in enumerate(error_counts):
        ev = evidence(arm("canary", version="2", errors=errors,
                          figures={"drift.inputs": 3.0}), at=NOW + 60 * (i + 1))
        d = decide(PLAN, 0, ev, state, NOW + 60 * (i + 1))
        rows += d.records(ev)
        state = d.state
    return rows


def test_records_carry_rule_measurements_versions_and_one_summary():
    rows = run(50)
    summary = rows[-1]
    assert summary["rule"] == "decision" and summary["outcome"] == "rollback"
    assert summary["candidate"] == "2" and summary["champion"] == "1"
    assert summary["at"] == datetime.fromtimestamp(NOW + 60, UTC)
    assert summary["candidate_digest"] == "sha-2" and summary["actor"] == "controller"
    rule = next(r for r in rows if r["rule"] == "error_rate<0.01")
    assert rule["outcome"] == "fail" and rule["measured"]["value"] == 0.05
    assert rule["samples"] == {"candidate": 1000} and rule["dry_run"] is False
    dry = next(r for r in rows if r["dry_run"])
    assert dry["outcome"] == "fail"


def test_explain_a_rollback_names_the_rule_its_numbers_and_the_versions():
    text = explain(run(50))
    assert text.startswith("Rolled back at step 0 on 2023-11-14 22:14:20 UTC by controller "
                           "(candidate 2, champion 1).")
    assert "error_rate<0.01 (2): canary: error_rate = 0.05 over 1000 samples" in text
    assert "value=0.05" in text and "n[candidate]=1000" in text
    assert "Dry-run rules that would have failed (they never decide)" in text
    assert "drift.inputs<=1" in text


def test_explain_a_rollback_after_good_evaluations_points_at_the_decisive_one():
    text = explain(run(0, 0, 50))
    assert text.startswith("Rolled back at step 0 on 2023-11-14 22:16:20 UTC")
    assert "3 evaluation(s) recorded." in text


def test_explain_a_running_rollout_shows_what_it_waits_on():
    plan_rows = []
    ev = evidence(arm("canary", version="2", requests=20))
    d = decide(PLAN, 0, ev, RolloutState.start(NOW), NOW + 60)
    plan_rows += d.records(ev)
    text = explain(plan_rows)
    assert text.startswith("Waiting for data at step 0")
    assert "Waiting on:" in text and "20 samples, 100 needed" in text


def test_explain_manual_actions_and_the_first_failure():
    rows = run(0, 50)
    rows.append({"at": NOW + 500, "step": 0, "rule": None, "outcome": "abort",
                 "actor": "alice", "reason": "customer complaint"})
    text = explain(rows)
    assert text.startswith("Aborted at step 0 on") and "by alice" in text
    assert "Why: customer complaint" in text
    assert "The first failed check was error_rate<0.01" in text


@dataclass
class Row:  # the registry's records are objects with the same names
    at: datetime
    step: int
    rule: str
    outcome: str
    reason: str
    actor: str = "controller"
    dry_run: bool = False


def test_explain_reads_objects_and_datetimes_in_any_order():
    rows = [Row(datetime(2024, 5, 1, 12, 0, tzinfo=UTC), 1, "decision", "rollback", "bad"),
            Row(datetime(2024, 5, 1, 11, 0), 0, "decision", "promote", "ok")]
    text = explain(rows)
    assert text.startswith("Rolled back at step 1 on 2024-05-01 12:00:00 UTC by controller.")
    assert "2 evaluation(s) recorded." in text


def test_explain_with_nothing_recorded_says_so():
    assert "No decisions recorded yet" in explain([])


def test_explain_survives_odd_rows():
    text = explain([{"outcome": "mystery"}, {"at": "yesterday", "rule": "decision",
                                             "outcome": None}])
    assert isinstance(text, str) and text


def test_records_go_into_the_registry_and_explain_reads_them_back(settings, make_bundle):
    # The real registry (SQLite): every row is the keyword arguments of record_decision.
    from shipyard.registry import Registry

    with Registry.open(settings) as registry:
        registry.push(make_bundle(version="1.0", content=b"1"))
        registry.push(make_bundle(version="2.0", content=b"2"))
        registry.deploy("web", {"variants": [{"name": "champion", "model": "iris:1.0",
                                              "weight": 100}]}, actor="ana")
        rollout = registry.start_rollout("web", strategy="canary", plan=PLAN.to_json(),
                                         candidate="iris:2.0", actor="ana")
        old, new = registry.resolve("iris:1.0"), registry.resolve("iris:2.0")
        for row in run(0, 50):
            # The controller fills the arms with the registry's refs and manifest digests.
            row.update(champion="iris:1.0", champion_digest=old.digest)
            if row["candidate"]:
                row.update(candidate="iris:2.0", candidate_digest=new.digest)
            registry.record_decision(rollout.id, **row)
        stored = registry.decisions(rollout.id, limit=100)
    text = explain(stored)
    assert text.startswith("Rolled back at step 0 on 2023-11-14 22:15:20 UTC by controller")
    assert "(candidate iris:2.0, champion iris:1.0)" in text
    assert "error_rate<0.01 (iris:2.0): canary: error_rate = 0.05" in text
