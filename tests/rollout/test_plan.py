"""RolloutPlan: YAML and CLI flags in, clear refusals for every kind of bad plan."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.errors import ConfigError
from shipyard.rollout.plan import RolloutPlan, parse_duration

CANARY = """
strategy: canary
model: fraud:2.0.0
interval_s: 30s
steps:
  - {weight: 5, min_duration_s: 10m, min_samples: 500, deadline_s: 2h}
  - {weight: 50, approval: true, on_deadline: abort}
  - {weight: 100, wait_for_labels: 200, on_deadline: promote}
rules:
  - error_rate < 0.01
  - latency_p99_ms <= 1.2 * champion
  - {name: acc-north, metric: accuracy, slice: region=north, op: ">=", threshold: 0.9}
  - {when: "drift.inputs <= 2", dry_run: true, failure_limit: 3, missing: pass}
"""


def refused(data: object) -> str:
    with pytest.raises(ConfigError) as caught:
        if isinstance(data, str):
            RolloutPlan.from_yaml(data)
        else:
            RolloutPlan.parse(data)
    assert caught.value.hint  # every refusal says where to look
    return caught.value.message


def test_a_canary_plan_parses_from_yaml_with_durations_and_short_rules():
    plan = RolloutPlan.from_yaml(CANARY)
    assert plan.strategy == "canary" and plan.candidates == ["fraud:2.0.0"]
    assert plan.interval_s == 30
    assert [s.weight for s in plan.steps] == [5, 50, 100]
    assert plan.steps[0].min_duration_s == 600 and plan.steps[0].deadline_s == 7200
    assert plan.steps[1].approval and plan.steps[1].on_deadline == "abort"
    assert plan.steps[2].on_deadline == "promote" and plan.steps[2].wait_for_labels == 200
    names = [r.name for r in plan.rules]
    assert names == ["error_rate<0.01", "latency_p99_ms<=1.2*champion", "acc-north",
                     "drift.inputs<=2"]
    latency = plan.rules[1]
    assert latency.relative == 1.2 and latency.threshold is None
    assert plan.rules[2].measured_metric == "accuracy.region=north"
    assert plan.rules[3].dry_run and plan.rules[3].failure_limit == 3
    assert RolloutPlan.parse(plan.to_json()) == plan  # a stored plan reads back the same


def test_the_cli_flags_of_the_issue_build_the_same_kind_of_plan():
    plan = RolloutPlan.from_flags(
        strategy="canary", model="fraud:2.0.0", steps="5,25,50,100", interval="10m",
        rules="rules:\n  - error_rate < 0.01\n  - accuracy >= champion\n",
        step_duration="5m", deadline="1h", min_samples=100)
    assert [s.weight for s in plan.steps] == [5, 25, 50, 100]
    assert plan.interval_s == 600
    assert all(s.min_duration_s == 300 and s.deadline_s == 3600 and s.min_samples == 100
               for s in plan.steps)
    assert plan.rules[1].relative == 1.0 and plan.rules[1].op == ">="


def test_each_strategy_gets_sensible_default_steps():
    direct = RolloutPlan.parse({"strategy": "direct", "model": "m:2"})
    assert [s.weight for s in direct.steps] == [100]
    shadow = RolloutPlan.parse({"strategy": "shadow", "model": "m:2",
                                "rules": ["agreement >= 0.95"]})
    assert [s.weight for s in shadow.steps] == [0]
    cc = RolloutPlan.from_flags(strategy="champion_challenger", model="m:2,m:3",
                                rules="- accuracy > champion\n")
    assert cc.candidates == ["m:2", "m:3"] and [s.weight for s in cc.steps] == [0]
    ab = RolloutPlan.from_flags(strategy="ab", model="m:2", ab_key="header:X-User",
                                ab_split="champion=50,candidate=50",
                                rules="- outcome.thumbs >= champion\n")
    assert ab.ab is not None and ab.ab.split == {"champion": 50, "candidate": 50}
    assert [s.weight for s in ab.steps] == [None]


@pytest.mark.parametrize(("plan", "words"), [
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": 50}, {"weight": 25}]},
     "increase"),
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": 5}, {"weight": 5}]},
     "increase"),
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": 0}, {"weight": 5}]},
     "start above 0"),
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": 150}]}, "100"),
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": -5}]}, "0"),
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": float("nan")}]}, "finite"),
    ({"strategy": "canary", "model": "m:2"}, "needs steps"),
    ({"strategy": "canary", "model": "m:2", "steps": [{}]}, "needs a weight"),
    ({"strategy": "rainbow", "model": "m:2"}, "unknown strategy 'rainbow'"),
    ({"strategy": "ab", "model": "m:2"}, "ab.key"),
    ({"strategy": "ab", "model": "m:2", "ab": {"split": {"a": 50, "b": 50}}}, "key"),
    ({"strategy": "ab", "model": "m:2", "ab": {"key": "header:X-User",
                                                "split": {"a": 60, "b": 50}}}, "adds up to 110"),
    ({"strategy": "ab", "model": "m:2", "ab": {"key": "cookie:x", "split": {"a": 50, "b": 50}}},
     "sticky key"),
    ({"strategy": "ab", "model": "m:2", "ab": {"key": "header:X", "split": {"a": 100}}},
     "two arms"),
    ({"strategy": "ab", "model": "m:2", "ab": {"key": "header:X",
                                                "split": {"a": 20, "b": 40, "c": 40}}},
     "3 arms"),
    ({"strategy": "ab", "model": "m:2", "ab": {"key": "header:X", "split": {"a": 50, "b": 50}},
      "steps": [{"weight": 10}]}, "ab.split"),
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": 5}],
      "ab": {"key": "header:X", "split": {"a": 50, "b": 50}}}, "only for the ab strategy"),
    ({"strategy": "shadow", "model": "m:2", "steps": [{"weight": 10}]}, "weight 0"),
    ({"strategy": "direct", "model": "m:2", "steps": [{"weight": 50}]}, "weight 100"),
    ({"strategy": "canary", "model": "../etc:2", "steps": [{"weight": 5}]}, "model"),
    ({"strategy": "canary", "model": ["m:2", "m:3"], "steps": [{"weight": 5}]},
     "one model"),
    ({"strategy": "champion_challenger", "model": ["m:2", "m:2"],
      "rules": ["accuracy > champion"]}, "twice"),
    ({"strategy": "champion_challenger", "model": [], "rules": ["accuracy > champion"]},
     "empty"),
    ({"strategy": "champion_challenger", "model": ["m:2"], "rules": ["error_rate < 0.1"]},
     "strict op relative"),
    ({"strategy": "champion_challenger", "model": ["m:2", "m:3"], "steps": [{"weight": 60}],
      "rules": ["accuracy > champion"]}, "more than all the traffic"),
    ({"strategy": "champion_challenger", "model": ["m:2"], "rules": ["accuracy > champion"],
      "steps": [{"on_deadline": "promote"}]}, "on_deadline must be rollback"),
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": 5, "min_duration_s": "2h",
                                                         "deadline_s": "1h"}]}, "shorter"),
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": 5, "deadline_s": 0}]},
     "greater than 0"),
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": 5, "deadline_s": "60s"}],
      "interval_s": "10m"}, "interval_s"),
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": 5, "min_duration_s": "soon"}]},
     "duration"),
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": 5, "deadline_s": "inf"}]},
     "duration"),
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": 5, "deadline_s": True}]},
     "duration"),
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": 5}], "color": "red"},
     "Extra inputs"),
    ({"strategy": "canary", "model": "m:2", "steps": [{"weight": 5}],
      "compat": {"allow_breaking": True}}, "reason"),
])
def test_bad_plans_are_refused_with_the_field_and_the_fix(plan, words):
    assert words in refused(plan)


@pytest.mark.parametrize(("rule", "words"), [
    ("error_rte < 0.01", "unknown metric 'error_rte'. Known metrics include error_rate"),
    ("accuracy.region < 0.01", "unknown metric"),
    ("drift.psi. < 0.2", "unknown metric"),
    ("error_rate << 0.01", "cannot read the rule"),
    ("error_rate < lots", "cannot read the rule"),
    ("error_rate < 1e999", "finite"),
    ({"metric": "error_rate", "op": "<"}, "exactly one of threshold"),
    ({"metric": "error_rate", "op": "<", "threshold": 0.1, "relative": 2}, "exactly one"),
    ({"metric": "error_rate", "op": "<", "relative": 0}, "greater than 0"),
    ({"metric": "error_rate", "op": "!=", "threshold": 1}, "op"),
    ({"metric": "error_rate", "op": "<", "threshold": 1, "slice": "a=b"}, "slices apply"),
    ({"metric": "accuracy", "op": ">", "threshold": 1, "slice": "north"}, "FIELD=VALUE"),
    ({"metric": "agreement", "op": ">=", "relative": 1}, "already compares"),
    ({"metric": "error_rate", "op": "<", "threshold": 1, "failure_limit": 0}, "failure_limit"),
    ({"metric": "error_rate", "op": "<", "threshold": 1, "missing": "ignore"}, "missing"),
    ({"metric": "error_rate", "op": "<", "threshold": 1, "name": "bad name!"}, "name"),
    ({"metric": "error_rate", "op": "<", "threshold": 1, "colour": 1}, "Extra inputs"),
])
def test_bad_rules_are_refused(rule, words):
    plan = {"strategy": "canary", "model": "m:2", "steps": [{"weight": 5}], "rules": [rule]}
    assert words in refused(plan)


def test_rule_names_must_be_unique():
    plan = {"strategy": "canary", "model": "m:2", "steps": [{"weight": 5}],
            "rules": ["error_rate < 0.01", "error_rate < 0.01"]}
    assert "unique" in refused(plan)


@pytest.mark.parametrize("text", ["", "[1, 2", "- just\n- a list", "42", "strategy: [",
                                  "\x00\x01", "a: b\n  c: d"])
def test_yaml_that_is_not_a_plan_is_refused(text):
    refused(text)


def test_flag_errors_are_refused_clearly():
    with pytest.raises(ConfigError, match="--steps"):
        RolloutPlan.from_flags(strategy="canary", model="m:2", steps="5,ten,100")
    with pytest.raises(ConfigError, match="ARM=PERCENT"):
        RolloutPlan.from_flags(strategy="ab", model="m:2", ab_key="header:X",
                               ab_split="a:50,b:50")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RolloutPlan.from_flags(strategy="canary", model="m:2", steps="5", rules="- [")
    with pytest.raises(ConfigError, match="unknown strategy"):
        RolloutPlan.from_flags(strategy="blue-green", model="m:2", steps="5")


def test_a_huge_bad_value_is_echoed_only_in_part():
    message = refused({"strategy": "x" * 100_000, "model": "m:2"})
    assert len(message) < 500


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1.5h", 5400),
                                               ("2d", 172800), ("45", 45), (0, 0), (2.5, 2.5),
                                               (" 3M ", 180)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "-5s", "1y", "nan", "999d", None, [1], True])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(st.lists(st.floats(min_value=0.5, max_value=100), min_size=1, max_size=8))
def test_canary_weights_are_accepted_exactly_when_strictly_increasing(weights):
    plan = {"strategy": "canary", "model": "m:2", "steps": [{"weight": w} for w in weights]}
    increasing = all(b > a for a, b in itertools.pairwise(weights))
    if increasing:
        assert [s.weight for s in RolloutPlan.parse(plan).steps] == weights
    else:
        assert "increase" in refused(plan)
