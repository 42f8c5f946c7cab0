"""AlertEvaluator: the state machine, no-data handling, scopes, the log sink."""

from __future__ import annotations

import json
import logging
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.errors import ConfigError
from shipyard.monitoring.alerts import AlertEvaluator, AlertEvent, LogSink
from shipyard.routing import AlertRule

SCOPE = {"deployment": "fraud", "variant": "canary", "model_version": "2.0.0"}


class Collect:
    """A sink that keeps what it is sent (a fake of our own protocol)."""

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []
        self.closed = False

    def send(self, event: AlertEvent) -> None:
        self.events.append(event)

    def close(self) -> None:
        self.closed = True


class Broken:
    def send(self, event: AlertEvent) -> None:
        raise RuntimeError("sink down")

    def close(self) -> None:
        raise RuntimeError("sink down")


def rule(**kw: object) -> AlertRule:
    base: dict[str, object] = {"name": "errors", "metric": "error_rate", "op": ">",
                               "threshold": 0.05, "for_s": 60}
    return AlertRule.model_validate({**base, **kw})


def states(events: list[AlertEvent]) -> list[tuple[str, str]]:
    return [(e.previous, e.state) for e in events]


def test_pending_then_firing_after_for_s_then_resolved() -> None:
    sink = Collect()
    ev = AlertEvaluator([rule()], [sink])
    assert ev.evaluate({"error_rate": 0.01}, 0, SCOPE) == []
    assert states(ev.evaluate({"error_rate": 0.2}, 10, SCOPE)) == [("inactive", "pending")]
    assert ev.evaluate({"error_rate": 0.3}, 69, SCOPE) == []  # 59 s: not yet
    assert ev.active()[0]["state"] == "pending"
    (fired,) = ev.evaluate({"error_rate": 0.3}, 70, SCOPE)
    assert (fired.previous, fired.state, fired.since, fired.value) == ("pending", "firing", 10,
                                                                       0.3)
    assert fired.scope == SCOPE and "error_rate = 0.3" in fired.reason
    assert ev.evaluate({"error_rate": 0.3}, 500, SCOPE) == []  # firing stays quiet
    (resolved,) = ev.evaluate({"error_rate": 0.0}, 600, SCOPE)
    assert (resolved.previous, resolved.state, resolved.since) == ("firing", "resolved", None)
    assert ev.active() == []
    assert [e.state for e in sink.events] == ["pending", "firing", "resolved"]
    assert [h["state"] for h in ev.history] == ["pending", "firing", "resolved"]
    # and it can fire again
    assert states(ev.evaluate({"error_rate": 0.9}, 700, SCOPE)) == [("resolved", "pending")]


def test_a_blip_shorter_than_for_s_never_fires() -> None:
    ev = AlertEvaluator([rule()], [])
    ev.evaluate({"error_rate": 0.2}, 0, SCOPE)
    assert states(ev.evaluate({"error_rate": 0.0}, 30, SCOPE)) == [("pending", "inactive")]
    assert ev.evaluate({"error_rate": 0.2}, 65, SCOPE)[0].state == "pending"  # clock restarts
    assert ev.evaluate({"error_rate": 0.2}, 100, SCOPE) == []


def test_no_for_duration_fires_at_once() -> None:
    ev = AlertEvaluator([rule(for_s=0)], [])
    assert states(ev.evaluate({"error_rate": 0.06}, 5, SCOPE)) == [("inactive", "firing")]


@pytest.mark.parametrize("missing", [{}, {"error_rate": None}, {"error_rate": math.nan},
                                     {"error_rate": "n/a"}, {"error_rate": True}])
def test_missing_figures_keep_the_state_and_say_no_data(missing: dict) -> None:
    ev = AlertEvaluator([rule(for_s=0)], [])
    ev.evaluate({"error_rate": 0.5}, 0, SCOPE)
    assert ev.evaluate(missing, 10, SCOPE) == []
    (alert,) = ev.active()
    assert alert["state"] == "firing" and alert["no_data"] is True
    assert alert["value"] == 0.5  # the last value seen
    # pending also survives a gap, and its clock keeps running from the start
    ev2 = AlertEvaluator([rule(for_s=60)], [])
    ev2.evaluate({"error_rate": 0.5}, 0, SCOPE)
    ev2.evaluate(missing, 30, SCOPE)
    assert ev2.evaluate({"error_rate": 0.5}, 61, SCOPE)[0].state == "firing"


def test_no_data_from_the_start_is_reported_and_never_fires() -> None:
    ev = AlertEvaluator([rule(for_s=0)], [])
    assert ev.evaluate({}, 0, SCOPE) == []
    (state,) = ev.states()
    assert state["state"] == "inactive" and state["no_data"] is True and state["value"] is None


@pytest.mark.parametrize(("op", "value", "fires"), [
    (">", 0.05, False), (">=", 0.05, True), ("<", 0.05, False), ("<=", 0.05, True),
    ("<", -math.inf, True), (">", math.inf, True), (">", -0.0, False),
])
def test_comparisons_at_the_edges(op: str, value: float, fires: bool) -> None:
    ev = AlertEvaluator([rule(op=op, for_s=0)], [])
    assert bool(ev.evaluate({"error_rate": value}, 0, SCOPE)) is fires


def test_infinite_values_stay_valid_json() -> None:
    ev = AlertEvaluator([rule(for_s=0, metric="latency_p99_ms", threshold=100)], [])
    (event,) = ev.evaluate({"latency_p99_ms": math.inf}, 0, SCOPE)
    text = json.dumps(event.to_json(), allow_nan=False)
    assert json.loads(text)["value"] == "inf"
    json.dumps(ev.active(), allow_nan=False)


def test_each_scope_has_its_own_state_and_variant_rules_only_see_their_variant() -> None:
    rules = [rule(name="all", for_s=0), rule(name="canary-only", for_s=0, variant="canary")]
    ev = AlertEvaluator(rules, [])
    champion = {**SCOPE, "variant": "champion", "model_version": "1.0.0"}
    fired = ev.evaluate({"error_rate": 0.5}, 0, champion)
    assert [e.rule for e in fired] == ["all"]
    fired = ev.evaluate({"error_rate": 0.5}, 0, SCOPE)
    assert sorted(e.rule for e in fired) == ["all", "canary-only"]
    assert ev.evaluate({"error_rate": 0.0}, 1, champion)[0].scope["variant"] == "champion"
    assert sorted(a["rule"] for a in ev.active()) == ["all", "canary-only"]


def test_retire_ends_the_alerts_of_a_variant_that_went_away() -> None:
    sink = Collect()
    ev = AlertEvaluator([rule(for_s=0), rule(name="slow", metric="p99", for_s=60)], [sink])
    ev.evaluate({"error_rate": 0.5, "p99": 0.5}, 0, SCOPE)
    other = {**SCOPE, "variant": "champion"}
    ev.evaluate({"error_rate": 0.5}, 0, other)
    events = ev.retire({"deployment": "fraud", "variant": "canary"}, 10)
    assert sorted((e.rule, e.state) for e in events) == [("errors", "resolved"),
                                                          ("slow", "inactive")]
    assert [a["scope"]["variant"] for a in ev.active()] == ["champion"]
    assert sink.events[-2:] == events


def test_the_log_sink_writes_one_json_line_per_transition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # rule names are ASCII by config; the figure name and scope may be any unicode
    ev = AlertEvaluator([rule(for_s=0, severity="critical", metric="drift.psi.größe")],
                        [LogSink()])
    with caplog.at_level(logging.INFO, logger="shipyard.alerts"):
        ev.evaluate({"drift.psi.größe": 0.5}, 0, {**SCOPE, "variant": "ß\nx"})
        ev.evaluate({"drift.psi.größe": 0.0}, 1, {**SCOPE, "variant": "ß\nx"})
    lines = [r for r in caplog.records if r.name == "shipyard.alerts"]
    assert [r.levelno for r in lines] == [logging.ERROR, logging.INFO]
    first = json.loads(lines[0].getMessage().removeprefix("alert "))
    assert first["metric"] == "drift.psi.größe" and first["state"] == "firing"
    assert first["scope"]["variant"] == "ß\nx"
    assert "\n" not in lines[0].getMessage()


def test_a_broken_sink_never_breaks_evaluation_or_the_other_sinks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = Collect()
    ev = AlertEvaluator([rule(for_s=0)], [Broken(), good])
    with caplog.at_level(logging.ERROR, logger="shipyard.alerts"):
        assert len(ev.evaluate({"error_rate": 0.5}, 0, SCOPE)) == 1
        ev.close()
    assert len(good.events) == 1 and good.closed
    assert any("failed" in r.getMessage() for r in caplog.records)


def test_duplicate_rule_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="more than once"):
        AlertEvaluator([rule(), rule(metric="other")], [])


def test_no_rules_no_events() -> None:
    ev = AlertEvaluator([], [])
    assert ev.evaluate({"error_rate": 1.0}, 0, SCOPE) == []
    assert ev.active() == [] and ev.history == []


def test_history_is_bounded() -> None:
    ev = AlertEvaluator([rule(for_s=0)], [], history_size=5)
    for t in range(20):
        ev.evaluate({"error_rate": 0.5 if t % 2 == 0 else 0.0}, t, SCOPE)
    assert len(ev.history) == 5
    assert ev.history[-1]["at"] == 19


@settings(max_examples=200, deadline=None)
@given(
    for_s=st.sampled_from([0.0, 1.0, 5.0]),
    steps=st.lists(st.tuples(st.floats(0, 3), st.one_of(st.none(), st.floats(0, 1))),
                   max_size=40),
)
def test_transitions_chain_and_firing_needs_for_s_of_holding(
    for_s: float, steps: list[tuple[float, float | None]]
) -> None:
    ev = AlertEvaluator([rule(threshold=0.5, for_s=for_s)], [])
    now, state, since = 0.0, "inactive", None
    for dt, value in steps:
        now += dt
        events = ev.evaluate({"error_rate": value}, now, SCOPE)
        assert len(events) <= 1
        for e in events:
            assert e.previous == state  # every transition starts where the last one ended
            assert (e.previous, e.state) in {
                ("inactive", "pending"), ("resolved", "pending"), ("pending", "firing"),
                ("pending", "inactive"), ("firing", "resolved"), ("inactive", "firing"),
                ("resolved", "firing"),
            }
            if e.state in ("pending", "firing") and e.previous != "pending":
                since = now
            if e.state == "firing":
                assert since is not None and now - since >= for_s
                assert value is not None and value > 0.5
            state = e.state
        if value is None:
            assert events == []
