"""decide: the decision table of every strategy, deadlines, approval, SRM, latching."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rollout_evidence import NOW, arm, evidence

from shipyard.errors import UserError
from shipyard.rollout.decide import RolloutState, decide
from shipyard.rollout.evidence import Outcome, Paired
from shipyard.rollout.plan import RolloutPlan

CANARY = RolloutPlan.parse({
    "strategy": "canary", "model": "fraud:2", "interval_s": 60,
    "steps": [{"weight": 10, "min_duration_s": 300, "deadline_s": 3600},
              {"weight": 50, "approval": True, "deadline_s": 3600, "on_deadline": "abort"},
              {"weight": 100, "min_samples": 5000, "deadline_s": 3600,
               "on_deadline": "promote"}],
    "rules": ["error_rate < 0.01", "latency_p99_ms <= 1.2 * champion",
              {"when": "drift.inputs <= 1", "dry_run": True}],
})
SPLIT = {"champion": 90, "canary": 10}
OBSERVED = {"champion": 9000, "canary": 1000}


def started(ago: float = 600) -> RolloutState:
    return RolloutState.start(NOW - ago)


def canary(**kw: object) -> object:
    return evidence(arm("canary", version="2", **kw), split=SPLIT, observed=OBSERVED)


def test_canary_healthy_past_min_duration_moves_to_the_next_step():
    d = decide(CANARY, 0, canary(), started(), NOW)
    assert d.outcome == "promote" and d.next_step == 1 and not d.finished
    assert d.winner == "canary" and "on to step 1" in d.reason
    assert d.state.step_started_at == NOW  # the next step's clock starts now
    assert {r.rule for r in d.rules} == {"error_rate<0.01", "latency_p99_ms<=1.2*champion",
                                         "drift.inputs<=1"}
    assert d.srm is not None and not d.srm.mismatch


def test_canary_holds_until_its_minimum_duration():
    d = decide(CANARY, 0, canary(), started(ago=60), NOW)
    assert d.outcome == "hold" and "minimum 300s" in d.reason and d.next_step is None


def test_canary_with_a_failing_rule_rolls_back_at_once():
    d = decide(CANARY, 0, canary(errors=50), started(ago=30), NOW)  # even before min duration
    assert d.outcome == "rollback" and "error_rate<0.01" in d.reason
    assert d.next_step is None and not d.finished


def test_low_traffic_holds_as_insufficient_data_rather_than_failing():
    low = evidence(arm("canary", requests=4, errors=2), split={"champion": 99, "canary": 1},
                   observed={"champion": 396, "canary": 4})
    d = decide(CANARY, 0, low, started(), NOW)
    assert d.outcome == "insufficient_data" and "4 samples, 100 needed" in d.reason


def test_a_failed_rule_latches_across_evaluations():
    bad = decide(CANARY, 0, canary(timeouts=0, errors=20), started(ago=30), NOW)
    assert bad.outcome == "rollback"
    # Had the controller evaluated once more with good numbers, the latch still holds.
    again = decide(CANARY, 0, canary(), bad.state, NOW + 60)
    assert again.outcome == "rollback" and "latched" in again.reason


def test_failure_limit_holds_before_rolling_back():
    plan = RolloutPlan.parse({"strategy": "canary", "model": "m:2", "steps": [{"weight": 10}],
                              "rules": [{"when": "error_rate < 0.01", "failure_limit": 2}]})
    first = decide(plan, 0, canary(errors=50), started(), NOW)
    assert first.outcome == "hold" and "failure 1 of 2" in first.reason
    second = decide(plan, 0, canary(), first.state, NOW + 60)
    assert second.outcome == "promote"  # a good evaluation in between is fine...
    third = decide(plan, 0, canary(errors=50), first.state, NOW + 120)
    assert third.outcome == "rollback"  # ...but the failures add up


def test_dry_run_rules_never_decide():
    drifting = canary(figures={"drift.inputs": 7.0})
    d = decide(CANARY, 0, drifting, started(), NOW)
    dry = next(r for r in d.rules if r.dry_run)
    assert dry.outcome == "fail" and d.outcome == "promote"
    missing = RolloutPlan.parse({"strategy": "canary", "model": "m:2", "steps": [{"weight": 10}],
                                 "rules": [{"when": "accuracy >= 0.9", "dry_run": True}]})
    assert decide(missing, 0, canary(), started(), NOW).outcome == "promote"


def test_approval_holds_until_the_owner_approves():
    d = decide(CANARY, 1, canary(), started(), NOW)
    assert d.outcome == "hold" and "approval" in d.reason
    assert decide(CANARY, 1, canary(), started(), NOW, approved=True).outcome == "promote"
    # A failing candidate is rolled back whatever the approval says.
    assert decide(CANARY, 1, canary(errors=90), started(), NOW,
                  approved=True).outcome == "rollback"


@pytest.mark.parametrize(("step", "action"), [(0, "rollback"), (1, "abort"), (2, "promote")])
def test_deadlines_end_every_step_with_the_declared_action(step, action):
    waiting = evidence(arm("canary", requests=10), split={"champion": 99, "canary": 1},
                       observed={"champion": 990, "canary": 10})
    before = decide(CANARY, step, waiting, started(ago=3599), NOW)
    assert before.outcome in ("insufficient_data", "hold")
    d = decide(CANARY, step, waiting, started(ago=3600), NOW)
    assert d.outcome == action and "deadline of 3600s reached" in d.reason
    if action == "promote":
        assert d.finished and d.winner == "canary"


def test_a_last_step_promotion_finishes():
    d = decide(CANARY, 2, canary(requests=6000), started(), NOW)
    assert d.outcome == "promote" and d.finished and d.next_step is None


def test_step_min_samples_holds_as_insufficient_data():
    d = decide(CANARY, 2, canary(requests=1000), started(), NOW)
    assert d.outcome == "insufficient_data" and "1000 of the 5000 requests" in d.reason


def test_a_sample_ratio_mismatch_rolls_back_with_its_own_reason():
    skewed = evidence(arm("canary"), split=SPLIT, observed={"champion": 8500, "canary": 1500})
    d = decide(CANARY, 0, skewed, started(), NOW)
    assert d.outcome == "rollback" and "sample-ratio mismatch" in d.reason
    assert d.srm is not None and d.srm.mismatch


def test_srm_is_not_tested_on_a_window_that_began_before_the_step():
    skewed = evidence(arm("canary"), split=SPLIT, observed={"champion": 8500, "canary": 1500},
                      window_s=900)
    d = decide(CANARY, 0, skewed, started(ago=600), NOW)
    assert d.srm is None and d.outcome == "promote"


def test_no_candidate_evidence_waits():
    d = decide(CANARY, 0, evidence(None), started(), NOW)
    assert d.outcome == "insufficient_data" and "fraud:2" in d.reason


def test_out_of_range_steps_are_refused():
    with pytest.raises(UserError, match="step 3"):
        decide(CANARY, 3, canary(), started(), NOW)
    with pytest.raises(UserError):
        decide(CANARY, -1, canary(), started(), NOW)


def test_direct_promotes_to_finished_when_healthy_and_rolls_back_when_not():
    plan = RolloutPlan.parse({"strategy": "direct", "model": "m:2",
                              "rules": ["error_rate < 0.02"]})
    ok = decide(plan, 0, evidence(arm("new")), started(), NOW)
    assert ok.outcome == "promote" and ok.finished
    bad = decide(plan, 0, evidence(arm("new", errors=100)), started(), NOW)
    assert bad.outcome == "rollback"


def test_shadow_judges_agreement_and_paired_accuracy():
    plan = RolloutPlan.parse({"strategy": "shadow", "model": "m:2",
                              "steps": [{"wait_for_labels": 200}],
                              "rules": ["agreement >= 0.9", "accuracy >= champion"]})
    good = Paired(n=3000, agree=2850, labelled_n=500, champion_only_correct=20,
                  challenger_only_correct=22)
    d = decide(plan, 0, evidence(arm("shadow"), paired={"shadow": good}), started(), NOW)
    assert d.outcome == "promote" and d.finished
    waiting = Paired(n=3000, agree=2850, labelled_n=150, champion_only_correct=5,
                     challenger_only_correct=6)
    d = decide(plan, 0, evidence(arm("shadow"), paired={"shadow": waiting}), started(), NOW)
    assert d.outcome == "insufficient_data" and "200 labelled predictions" in d.reason
    worse = Paired(n=3000, agree=2850, labelled_n=500, champion_only_correct=60,
                   challenger_only_correct=15)
    d = decide(plan, 0, evidence(arm("shadow"), paired={"shadow": worse}), started(), NOW)
    assert d.outcome == "rollback" and "McNemar" in d.reason
    diverging = Paired(n=3000, agree=2000)
    d = decide(plan, 0, evidence(arm("shadow"), paired={"shadow": diverging}), started(), NOW)
    assert d.outcome == "rollback" and "agreement" in d.reason


def test_wait_for_labels_counts_each_arm_without_pairs():
    plan = RolloutPlan.parse({"strategy": "canary", "model": "m:2",
                              "steps": [{"weight": 10, "wait_for_labels": 100}]})
    ev = evidence(arm("canary", figures={"labelled": 150}), split=SPLIT, observed=OBSERVED,
                  champion=arm("champion", figures={"labelled": 40}))
    d = decide(plan, 0, ev, started(), NOW)
    assert d.outcome == "insufficient_data" and "champion 40" in d.reason


AB = RolloutPlan.parse({
    "strategy": "ab", "model": "m:2", "ab": {"key": "header:X-User",
                                             "split": {"a": 50, "b": 50}},
    "rules": ["outcome.thumbs > champion", "error_rate < 0.05"],
})


def ab_evidence(candidate: Outcome, observed: dict[str, int] | None = None) -> object:
    return evidence(arm("b", outcomes={"thumbs": candidate}),
                    champion=arm("a", outcomes={"thumbs": Outcome(4000, 0.30, 0.21)}),
                    split={"a": 50, "b": 50}, observed=observed or {"a": 5010, "b": 4990})


def test_ab_promotes_only_a_significant_winner_and_waits_otherwise():
    won = decide(AB, 0, ab_evidence(Outcome(4000, 0.36, 0.2304)), started(), NOW)
    assert won.outcome == "promote" and won.finished
    even = decide(AB, 0, ab_evidence(Outcome(4000, 0.305, 0.212)), started(), NOW)
    assert even.outcome == "insufficient_data" and "not yet significantly" in even.reason
    lost = decide(AB, 0, ab_evidence(Outcome(4000, 0.22, 0.1716)), started(), NOW)
    assert lost.outcome == "rollback" and "significantly worse" in lost.reason


def test_ab_with_a_skewed_split_rolls_back_before_comparing():
    d = decide(AB, 0, ab_evidence(Outcome(4000, 0.36, 0.2304), {"a": 5400, "b": 4600}),
               started(), NOW)
    assert d.outcome == "rollback" and "sample-ratio mismatch" in d.reason


CC = RolloutPlan.parse({
    "strategy": "champion_challenger", "model": ["m:2", "m:3"],
    "rules": ["accuracy > champion", "error_rate < 0.05"],
})


def pairs(champion_only: int, challenger_only: int) -> Paired:
    return Paired(n=5000, agree=4500, labelled_n=2000, champion_only_correct=champion_only,
                  challenger_only_correct=challenger_only)


def cc_evidence(x: Paired, y: Paired, *, y_errors: int = 0) -> object:
    return evidence(arm("x", version="2"), others={"y": arm("y", version="3", errors=y_errors)},
                    paired={"x": x, "y": y})


def test_champion_challenger_promotes_the_challenger_that_beats_the_champion():
    d = decide(CC, 0, cc_evidence(pairs(40, 45), pairs(30, 90)), started(), NOW)
    assert d.outcome == "promote" and d.winner == "y" and d.finished


def test_champion_challenger_picks_the_largest_margin_when_several_win():
    d = decide(CC, 0, cc_evidence(pairs(30, 90), pairs(20, 120)), started(), NOW)
    assert d.outcome == "promote" and d.winner == "y"
    d = decide(CC, 0, cc_evidence(pairs(20, 120), pairs(30, 90)), started(), NOW)
    assert d.winner == "x"


def test_champion_challenger_knocks_out_a_failing_challenger_and_goes_on():
    d = decide(CC, 0, cc_evidence(pairs(40, 45), pairs(30, 90), y_errors=200), started(), NOW)
    assert d.outcome == "insufficient_data" and d.eliminated == ("y",)
    assert "knocked out" in d.reason and d.state.eliminated == ("y",)
    # Next time only x is judged; once it too fails, the champion stays: rollback.
    later = decide(CC, 0, cc_evidence(pairs(90, 30), pairs(30, 90)), d.state, NOW + 60)
    assert later.outcome == "rollback" and all(r.variant == "x" for r in later.rules)


def test_champion_challenger_keeps_the_champion_when_no_one_beats_it_in_time():
    d = decide(CC, 0, cc_evidence(pairs(40, 45), pairs(40, 41)), started(ago=86400), NOW)
    assert d.outcome == "rollback" and "deadline" in d.reason


def test_decision_state_round_trips_through_json():
    d = decide(CC, 0, cc_evidence(pairs(40, 45), pairs(30, 90), y_errors=200), started(), NOW)
    assert RolloutState.from_json(d.state.to_json()) == d.state
    body = d.to_json()
    assert body["outcome"] == "insufficient_data" and body["state"]["eliminated"] == ["y"]
    assert json.loads(json.dumps(body, allow_nan=False)) == body
    rows = d.records(cc_evidence(pairs(40, 45), pairs(30, 90), y_errors=200))
    assert json.loads(json.dumps(rows, allow_nan=False, default=str))


@given(st.integers(0, 1000), st.floats(0, 7200), st.booleans())
def test_decide_always_answers_with_a_known_outcome(errors, ago, approved):
    d = decide(CANARY, 1, canary(errors=errors), started(ago=ago), NOW, approved=approved)
    assert d.outcome in ("promote", "hold", "rollback", "insufficient_data", "abort")
    if ago >= 3600:  # past the deadline nothing keeps holding
        assert d.outcome in ("promote", "rollback", "abort")
    if errors >= 10:  # 1% of 1000 requests
        assert d.outcome == "rollback"
