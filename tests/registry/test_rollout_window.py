"""The controller's evidence window: a step is judged only on traffic its revision answered.

A server loads and warms a new revision in the background while the old one keeps
answering; counting that time as the step's would mix the old split into the new and fake a
sample-ratio mismatch (a fair 50/50 canary then looks like 83/45).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from shipyard.monitoring.metrics import ServiceMetrics
from shipyard.monitoring.monitor import Monitor
from shipyard.registry import Registry
from shipyard.registry.rollouts import RolloutRecord
from shipyard.rollout.controller import SWITCH_S, Controller
from shipyard.rollout.plan import RolloutPlan

MakeBundle = Callable[..., Path]
PLAN = {"strategy": "canary", "model": "iris:2.0", "steps": [{"weight": 50}, {"weight": 100}],
        "rules": []}
CANARY_50 = {"variants": [
    {"name": "champion", "model": "iris:1.0", "role": "champion", "weight": 50},
    {"name": "canary", "model": "iris:2.0", "role": "canary", "weight": 50},
]}


@pytest.fixture
def rollout(sqlite_registry: Registry, make_bundle: MakeBundle) -> RolloutRecord:
    registry = sqlite_registry
    registry.push(make_bundle(version="1.0", content=b"1"))
    registry.push(make_bundle(version="2.0", content=b"2"))
    registry.deploy("web", {"variants": [{"name": "champion", "model": "iris:1.0",
                                          "role": "champion", "weight": 100}]}, actor="ana")
    return registry.start_rollout("web", strategy="canary", plan=PLAN, candidate="iris:2.0",
                                  actor="ana", spec=CANARY_50)


def _window(registry: Registry, monitor: Monitor, record: RolloutRecord, now: float) -> float:
    plan = RolloutPlan.parse(record.plan)
    return Controller(registry, monitor).evidence(record, plan, now).window_s


def test_the_window_opens_when_this_server_answers_with_the_steps_revision(
    sqlite_registry: Registry, rollout: RolloutRecord,
) -> None:
    monitor = Monitor(ServiceMetrics())
    step_start = rollout.step_started_at.timestamp()
    now = step_start + 30
    assert rollout.revision == 2
    monitor.serving("web", 1, at=step_start - 100)  # still loading revision 2
    assert _window(sqlite_registry, monitor, rollout, now) == 0.0
    monitor.serving("web", 2, at=step_start + 12)  # warming took 12 s
    assert _window(sqlite_registry, monitor, rollout, now) == pytest.approx(18.0)
    monitor.serving("web", 2, at=step_start + 0.5)  # a quick switch: the grace still holds
    assert _window(sqlite_registry, monitor, rollout, now) == pytest.approx(30 - SWITCH_S)


def test_a_monitor_no_fleet_here_feeds_falls_back_on_the_grace(
    sqlite_registry: Registry, rollout: RolloutRecord,
) -> None:
    monitor = Monitor(ServiceMetrics())
    now = rollout.step_started_at.timestamp() + 30
    assert monitor.live_since("web", 2) is None
    assert _window(sqlite_registry, monitor, rollout, now) == pytest.approx(30 - SWITCH_S)
    monitor.close()
