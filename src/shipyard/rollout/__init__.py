"""Rollouts: plans, the evidence they are judged on, rules, statistics and decisions.

Pure: no I/O and no clock (`now` is passed in). The controller that reads monitoring,
writes decisions to the registry and changes traffic builds on these.
"""

from shipyard.rollout.decide import RolloutState, StepDecision, decide
from shipyard.rollout.evidence import ArmEvidence, Evidence, Outcome, Paired
from shipyard.rollout.explain import explain
from shipyard.rollout.plan import ABConfig, CompatPolicy, RolloutPlan, Step, parse_duration
from shipyard.rollout.rules import Rule, RuleResult, RuleState, evaluate_rule

__all__ = [
    "ABConfig",
    "ArmEvidence",
    "CompatPolicy",
    "Evidence",
    "Outcome",
    "Paired",
    "RolloutPlan",
    "RolloutState",
    "Rule",
    "RuleResult",
    "RuleState",
    "Step",
    "StepDecision",
    "decide",
    "evaluate_rule",
    "explain",
    "parse_duration",
]
