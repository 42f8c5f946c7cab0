"""evaluate_rule: pass, fail, insufficient data, missing-data policies, tests and latching."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rollout_evidence import arm, evidence

from shipyard.errors import UserError
from shipyard.rollout.evidence import ArmEvidence, Evidence, Outcome, Paired
from shipyard.rollout.rules import Rule, RuleState, evaluate_rule


def rule(text: str, **extra: object) -> Rule:
    return Rule.model_validate({"when": text, **extra})


def test_an_absolute_rule_passes_and_fails_on_the_candidates_figure():
    ok = evaluate_rule(rule("error_rate < 0.01"), evidence(arm("canary", errors=5)))
    assert ok.outcome == "pass" and ok.evaluation == "pass"
    assert ok.measured["value"] == 0.005 and ok.samples == {"candidate": 1000}
    assert 0 < ok.measured["ci_low"] < 0.005 < ok.measured["ci_high"]  # Wilson, for the record
    bad = evaluate_rule(rule("error_rate < 0.01"), evidence(arm("canary", errors=30)))
    assert bad.outcome == "fail" and "0.03" in bad.reason and "does not hold" in bad.reason
    assert bad.state.failed and bad.state.failed_at == bad.state.failed_at


def test_a_relative_rule_compares_with_the_champion():
    champion = arm("champion", p99=100.0)
    r = rule("latency_p99_ms <= 1.2 * champion")
    ok = evaluate_rule(r, evidence(arm("canary", p99=119.0), champion=champion))
    assert ok.outcome == "pass" and ok.measured["target"] == pytest.approx(120.0)
    bad = evaluate_rule(r, evidence(arm("canary", p99=121.0), champion=champion))
    assert bad.outcome == "fail" and "1.2 x champion's 100" in bad.reason
    assert bad.samples == {"candidate": 1000, "champion": 1000}


def test_low_traffic_is_insufficient_data_never_a_failure():
    # 1 error in 3 requests is a 33% error rate, and proves nothing yet.
    result = evaluate_rule(rule("error_rate < 0.01"), evidence(arm("canary", requests=3,
                                                                   errors=1)))
    assert result.outcome == "insufficient_data" and "3 samples, 100 needed" in result.reason
    assert not result.state.failed and result.state.failures == 0


def test_a_relative_rule_needs_samples_on_both_arms():
    r = rule("latency_p99_ms <= 1.2 * champion")
    result = evaluate_rule(r, evidence(arm("canary"), champion=arm("champion", requests=10)))
    assert result.outcome == "insufficient_data"


@pytest.mark.parametrize(("policy", "outcome"), [("hold", "insufficient_data"), ("fail", "fail"),
                                                 ("pass", "pass")])
def test_missing_data_follows_the_rules_policy(policy, outcome):
    r = rule("drift.inputs <= 2", missing=policy)
    result = evaluate_rule(r, evidence(arm("canary")))  # no drift figure at all
    assert result.outcome == outcome and f"missing data policy: {policy}" in result.reason


def test_a_nan_or_infinite_figure_is_missing_data_not_a_number():
    candidate = arm("canary", figures={"drift.inputs": math.nan, "accuracy": math.inf})
    assert candidate.figures == {"drift.inputs": None, "accuracy": None}
    result = evaluate_rule(rule("drift.inputs <= 2", missing="fail"), evidence(candidate))
    assert result.outcome == "fail" and "no data" in result.reason


def test_no_traffic_at_all_is_missing_data():
    result = evaluate_rule(rule("error_rate < 0.01"), evidence(arm("canary", requests=0)))
    assert result.outcome == "insufficient_data" and "no data" in result.reason


def test_a_missing_champion_figure_is_missing_data_for_a_relative_rule():
    r = rule("latency_p99_ms <= 1.2 * champion")
    result = evaluate_rule(r, evidence(arm("canary"), champion=arm("champion", p99=None)))
    assert result.outcome == "insufficient_data" and "champion" in result.reason


def test_a_failed_rule_latches_later_good_numbers_never_unfail_it():
    r = rule("error_rate < 0.01")
    first = evaluate_rule(r, evidence(arm("canary", errors=50), at=100.0))
    assert first.outcome == "fail" and first.state.failed_at == 100.0
    later = evaluate_rule(r, evidence(arm("canary", errors=0), at=200.0), first.state)
    assert later.evaluation == "pass" and later.outcome == "fail"
    assert "latched" in later.reason and "0.05" in later.reason
    assert later.state.failed_at == 100.0 and later.state.evaluations == 2


def test_failure_limit_counts_failed_evaluations_before_the_rule_fails():
    r = rule("error_rate < 0.01", failure_limit=3)
    bad, good = evidence(arm("canary", errors=50)), evidence(arm("canary"))
    state = None
    outcomes = []
    for ev in (bad, good, bad, good, bad, good):
        result = evaluate_rule(r, ev, state)
        state = result.state
        outcomes.append(result.outcome)
    # Failures count in total, not only in a row; under the limit a failure holds.
    assert outcomes == ["hold", "pass", "hold", "pass", "fail", "fail"]
    assert state is not None and state.failures == 3 and state.failed


def test_dry_run_rules_are_evaluated_and_marked():
    result = evaluate_rule(rule("error_rate < 0.01", dry_run=True),
                           evidence(arm("canary", errors=50)))
    assert result.outcome == "fail" and result.dry_run


def test_slices_read_the_slice_figure_and_its_labelled_count():
    candidate = arm("canary", figures={"accuracy.region=north": 0.7, "labelled.region=north": 400,
                                       "accuracy": 0.95, "labelled": 5000})
    r = Rule(metric="accuracy", slice="region=north", op=">=", threshold=0.9)
    result = evaluate_rule(r, evidence(candidate))
    assert result.outcome == "fail" and result.samples == {"candidate": 400}
    assert result.metric == "accuracy.region=north"


def test_paired_agreement_reads_the_pairing():
    paired = {"shadow": Paired(n=1000, agree=930)}
    result = evaluate_rule(rule("agreement >= 0.95"), evidence(arm("shadow"), paired=paired))
    assert result.outcome == "fail" and result.measured["value"] == pytest.approx(0.93)
    regress = {"shadow": Paired(n=500, agree=480, diffs={"mean": 0.1, "p99": 3.0})}
    ok = evaluate_rule(rule("diff.p99 < 5"), evidence(arm("shadow"), paired=regress))
    assert ok.outcome == "pass" and ok.samples == {"candidate": 500}


def test_mcnemar_decides_paired_accuracy_against_the_champion():
    beats = rule("accuracy > champion")
    better = {"c": Paired(n=2000, agree=1800, labelled_n=1000, champion_only_correct=20,
                          challenger_only_correct=60)}
    won = evaluate_rule(beats, evidence(arm("c"), paired=better))
    assert won.outcome == "pass" and "significantly better" in won.reason
    assert won.measured["p_value"] < 0.001 and won.samples == {"labelled_pairs": 1000}
    even = {"c": Paired(n=2000, agree=1800, labelled_n=1000, champion_only_correct=40,
                        challenger_only_correct=45)}
    undecided = evaluate_rule(beats, evidence(arm("c"), paired=even))
    assert undecided.outcome == "insufficient_data" and "not yet" in undecided.reason
    # Non-inferiority: the same even numbers pass, a clearly worse challenger fails.
    no_worse = rule("accuracy >= champion")
    assert evaluate_rule(no_worse, evidence(arm("c"), paired=even)).outcome == "pass"
    worse = {"c": Paired(n=2000, agree=1800, labelled_n=1000, champion_only_correct=70,
                         challenger_only_correct=20)}
    assert evaluate_rule(no_worse, evidence(arm("c"), paired=worse)).outcome == "fail"
    assert evaluate_rule(beats, evidence(arm("c"), paired=worse)).outcome == "fail"


def test_mcnemar_waits_for_enough_labelled_pairs():
    few = {"c": Paired(n=50, agree=40, labelled_n=30, champion_only_correct=0,
                       challenger_only_correct=10)}
    result = evaluate_rule(rule("accuracy > champion"), evidence(arm("c"), paired=few))
    assert result.outcome == "insufficient_data" and "30 labelled pairs" in result.reason


def ab(champion: Outcome, candidate: Outcome) -> Evidence:
    return evidence(arm("b", outcomes={"thumbs": candidate}),
                    champion=arm("a", outcomes={"thumbs": champion}))


def test_outcomes_relative_to_the_champion_use_the_sequential_test():
    beats, no_worse = rule("outcome.thumbs > champion"), rule("outcome.thumbs >= champion")
    base = Outcome(4000, 0.30, 0.21)
    up, flat, down = Outcome(4000, 0.36, 0.2304), Outcome(4000, 0.305, 0.212), \
        Outcome(4000, 0.24, 0.1824)
    won = evaluate_rule(beats, ab(base, up))
    assert won.outcome == "pass" and won.measured["ci_low"] > 0
    assert won.measured["welch_p"] is not None and "always-valid" in won.reason
    assert evaluate_rule(beats, ab(base, flat)).outcome == "insufficient_data"
    assert evaluate_rule(no_worse, ab(base, flat)).outcome == "pass"
    lost = evaluate_rule(no_worse, ab(base, down))
    assert lost.outcome == "fail" and lost.measured["ci_high"] < 0
    # Lower is better ("<"): the same numbers read the other way round.
    assert evaluate_rule(rule("outcome.thumbs < champion"), ab(base, down)).outcome == "pass"


def test_outcomes_without_variance_cannot_be_tested_yet():
    result = evaluate_rule(rule("outcome.thumbs > champion", min_samples=1),
                           ab(Outcome(5, 1.0, 0.0), Outcome(5, 1.0, 0.0)))
    assert result.outcome == "insufficient_data" and "no variance" in result.reason


def test_an_absent_outcome_is_missing_data():
    result = evaluate_rule(rule("outcome.score >= champion"), ab(Outcome(10, 1, 1),
                                                                 Outcome(10, 1, 1)))
    assert result.outcome == "insufficient_data" and "no data" in result.reason


def test_one_candidate_is_judged_by_default_several_need_a_name():
    many = evidence(arm("x"), others={"y": arm("y")})
    with pytest.raises(ValueError, match="variant="):
        evaluate_rule(rule("error_rate < 0.01"), many)
    assert evaluate_rule(rule("error_rate < 0.01"), many, variant="y").variant == "y"
    gone = evaluate_rule(rule("error_rate < 0.01"), many, variant="z")
    assert gone.outcome == "insufficient_data" and "no evidence" in gone.reason


@pytest.mark.parametrize("bad", [
    {"requests": -1}, {"requests": 10, "errors": 11}, {"requests": True},
    {"requests": 10, "timeouts": 11}, {"requests": 1.5},
])
def test_impossible_evidence_is_refused(bad):
    with pytest.raises(UserError):
        ArmEvidence(variant="x", version="1", **bad)


def test_impossible_pairs_and_outcomes_are_refused():
    with pytest.raises(UserError):
        Paired(n=10, agree=11)
    with pytest.raises(UserError):
        Paired(n=10, agree=5, labelled_n=4, champion_only_correct=3, challenger_only_correct=3)
    with pytest.raises(UserError):
        Outcome(10, 0.5, -1.0)
    with pytest.raises(UserError):
        Evidence(at=math.nan, window_s=60, champion=arm("a"))
    with pytest.raises(UserError):
        Evidence(at=1.0, window_s=60, champion=arm("a"), configured_split={"a": 120})


def test_evidence_round_trips_through_json():
    ev = evidence(arm("b", outcomes={"thumbs": Outcome.from_values([1, 0, 1, 1])}),
                  paired={"b": Paired(n=4, agree=3, confusion={"x": {"y": 1}})},
                  split={"a": 50, "b": 50}, observed={"a": 10, "b": 12})
    assert Evidence.from_json(ev.to_json()) == ev
    assert Outcome.from_values([]) == Outcome(0, None, None)
    assert Outcome.from_values([2.0]).variance == 0.0


@given(st.lists(st.sampled_from([True, False]), min_size=1, max_size=30),
       st.integers(1, 5))
def test_once_failed_always_failed(sequence, limit):
    r = rule("error_rate < 0.01", failure_limit=limit)
    state: RuleState | None = None
    failed_seen = False
    for bad in sequence:
        result = evaluate_rule(r, evidence(arm("c", errors=50 if bad else 0)), state)
        state = result.state
        if failed_seen:
            assert result.outcome == "fail"
        failed_seen = failed_seen or result.outcome == "fail"
    assert failed_seen == (sum(sequence) >= limit)
