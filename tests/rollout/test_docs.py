"""docs/rollouts.md documents every plan, step and rule field, and its example parses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shipyard.rollout.metrics import EXAMPLES
from shipyard.rollout.plan import ABConfig, CompatPolicy, RolloutPlan, Step
from shipyard.rollout.rules import Rule

DOC = (Path(__file__).resolve().parents[2] / "docs" / "rollouts.md").read_text()


@pytest.mark.parametrize("model", [RolloutPlan, Step, Rule, ABConfig, CompatPolicy])
def test_every_field_is_documented(model):
    prefix = {ABConfig: "ab.", CompatPolicy: "compat."}.get(model, "")
    for name in model.model_fields:
        assert f"`{prefix}{name}`" in DOC, f"{prefix}{name} is not in docs/rollouts.md"


def test_every_metric_family_is_documented():
    for name in EXAMPLES:
        assert name.split(".")[0] in DOC


def test_the_example_plan_parses():
    block = re.search(r"```yaml\n(.*?)```", DOC, flags=re.S)
    assert block is not None
    plan = RolloutPlan.from_yaml(block.group(1))
    assert plan.strategy == "canary" and len(plan.steps) == 3 and len(plan.rules) == 4
