"""Analysis rules: one declarative condition on one metric of a candidate, and its verdict.

A rule compares the candidate's value with a `threshold` (`error_rate < 0.01`) or with the
champion's value times `relative` (`latency_p99_ms <= 1.2 * champion`). Comparisons of
feedback outcomes and of paired accuracy against the champion use a test instead of the
point values, so noise alone neither promotes nor rolls back:

- `outcome.NAME` relative to the champion: the peeking-safe sequential test (stats.py);
- `accuracy` relative (1.0) to the champion with paired labelled evidence: McNemar's test.

For those, a strict operator (`>`, `<`) means "must beat the champion": the rule passes only
once the difference is significant in the right direction. A non-strict one (`>=`, `<=`)
means "must not be worse": it fails only once the difference is significant in the wrong
direction. The same strictness works as written for plain comparisons.

Each evaluation gives pass, fail or insufficient_data (too few samples, or no data under the
`missing: hold` policy). A failed evaluation counts towards `failure_limit`; at the limit
the rule has failed, and a failed rule LATCHES: `RuleState` (kept by the caller and passed
back) remembers it, and later good numbers never un-fail it.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shipyard.rollout import stats
from shipyard.rollout.evidence import Evidence
from shipyard.rollout.metrics import SLICE_PATTERN, Reading, family_of, read, suggest

__all__ = ["Rule", "RuleResult", "RuleState", "evaluate_rule"]

Op = Literal["<", "<=", ">", ">="]
Verdict = Literal["pass", "fail", "insufficient_data"]
# A rule's standing after its failure limit and latch: "hold" is a failed evaluation
# still under the limit (it blocks promotion but does not roll back).
Standing = Literal["pass", "fail", "insufficient_data", "hold"]
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
CONDITION = re.compile(
    r"^\s*(?P<metric>\S+)\s*(?P<op><=|>=|<|>)\s*(?:(?P<relative>[-+0-9.eE]+)\s*\*\s*champion"
    r"|champion|(?P<threshold>[-+0-9.eE]+))\s*$"
)


class Rule(BaseModel):
    """One analysis rule (docs/rollouts.md)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9._@=<>*-]{0,99}$",
                      description="Rule name in decisions (default: derived from the rule).")
    metric: str = Field(min_length=1, max_length=300,
                        description="A known metric, e.g. error_rate, latency_p99_ms, "
                        "accuracy, outcome.thumbs (docs/rollouts.md lists them).")
    op: Op = Field(description="How the candidate compares: <, <=, > or >=.")
    threshold: float | None = Field(default=None, allow_inf_nan=False,
                                    description="An absolute bound.")
    relative: float | None = Field(default=None, gt=0, allow_inf_nan=False,
                                   description="Compare with this times the champion's value.")
    min_samples: int = Field(default=100, ge=0, description="Samples needed before judging: "
                             "requests, pairs, labelled predictions or outcomes per arm.")
    failure_limit: int = Field(default=1, ge=1, le=1000,
                               description="Failed evaluations before the rule has failed.")
    missing: Literal["hold", "fail", "pass"] = Field(
        default="hold", description="When the figure is absent: hold (insufficient data), "
        "fail (counts as a failed evaluation) or pass.")
    dry_run: bool = Field(default=False,
                          description="Evaluated and recorded, never deciding.")
    slice: str | None = Field(default=None, description="FIELD=VALUE: judge a performance "
                              "metric on one slice, e.g. region=north.")
    alpha: float = Field(default=0.05, gt=0, lt=0.5,
                         description="False-positive rate of the statistical tests.")

    @model_validator(mode="before")
    @classmethod
    def _condition(cls, data: Any) -> Any:
        # "error_rate < 0.01" or "latency_p99_ms <= 1.2 * champion" as a whole rule.
        if isinstance(data, str):
            return parse_condition(data)
        if isinstance(data, dict) and isinstance(data.get("when"), str):
            rest = {k: v for k, v in data.items() if k != "when"}
            return {**parse_condition(data["when"]), **rest}
        return data

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if (self.threshold is None) == (self.relative is None):
            raise ValueError(f"rule on {self.metric!r}: give exactly one of threshold "
                             "(e.g. 0.01) or relative (e.g. 1.2 for 1.2 x champion)")
        family = family_of(self.metric)
        if family is None:
            raise ValueError(f"unknown metric {self.metric!r}. {suggest(self.metric)}")
        if self.slice is not None:
            if family != "performance" or "=" in self.metric:
                raise ValueError(f"slice {self.slice!r} on {self.metric!r}: slices apply to "
                                 "performance metrics (accuracy, f1_macro, rmse, ...)")
            if not SLICE_PATTERN.fullmatch(self.slice):
                raise ValueError(f"slice {self.slice!r}: expected FIELD=VALUE, e.g. "
                                 "region=north")
        if family == "paired" and self.relative is not None:
            raise ValueError(f"{self.metric} already compares the candidate with the "
                             "champion: give a threshold, e.g. agreement >= 0.95")
        if not self.name:
            bound = f"{self.relative:g}*champion" if self.relative else f"{self.threshold:g}"
            self.name = f"{self.measured_metric}{self.op}{bound}"[:100]
        return self

    @property
    def measured_metric(self) -> str:
        """The figure read from the evidence (with the slice folded in)."""
        return f"{self.metric}.{self.slice}" if self.slice else self.metric


def parse_condition(text: str) -> dict[str, Any]:
    """'error_rate < 0.01' -> metric, op, threshold; '... <= 1.2 * champion' -> relative."""
    match = CONDITION.match(text)
    if not match:
        raise ValueError(f"cannot read the rule {text[:80]!r}: expected METRIC OP NUMBER or "
                         "METRIC OP [FACTOR *] champion, e.g. 'error_rate < 0.01' or "
                         "'latency_p99_ms <= 1.2 * champion'")
    out: dict[str, Any] = {"metric": match["metric"], "op": match["op"]}
    try:
        if match["threshold"] is not None:
            out["threshold"] = float(match["threshold"])
        else:
            out["relative"] = float(match["relative"] or 1.0)
    except ValueError:
        raise ValueError(f"cannot read the number in the rule {text[:80]!r}") from None
    return out


@dataclass(frozen=True)
class RuleState:
    """What a rule remembers between evaluations (kept by the caller, passed back in)."""

    evaluations: int = 0
    failures: int = 0  # failed evaluations so far (all of them, not only consecutive ones)
    failed: bool = False  # latched: once True it stays True
    failed_at: float | None = None
    failed_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RuleResult:
    rule: str
    metric: str
    variant: str  # the candidate judged
    outcome: Standing  # the rule's standing after failure limit and latch
    evaluation: Verdict  # what this evaluation alone found
    measured: dict[str, float | None]
    samples: dict[str, int]
    reason: str
    dry_run: bool
    state: RuleState = field(default_factory=RuleState)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["measured"] = {k: (v if v is None or math.isfinite(v) else str(v))
                            for k, v in self.measured.items()}
        return body


@dataclass(frozen=True)
class _Verdict:
    verdict: Verdict
    reason: str
    measured: dict[str, float | None]
    samples: dict[str, int]


def evaluate_rule(rule: Rule, evidence: Evidence, state: RuleState | None = None, *,
                  variant: str | None = None) -> RuleResult:
    """Judge `rule` on one candidate (`variant`, default: the only candidate)."""
    state = state or RuleState()
    if variant is None:
        if len(evidence.candidates) != 1:
            raise ValueError("evaluate_rule needs variant= when there is not exactly one "
                             f"candidate (got {sorted(evidence.candidates)})")
        variant = next(iter(evidence.candidates))
    found = _judge(rule, evidence, variant)
    failures = state.failures + (found.verdict == "fail")
    state = replace(state, evaluations=state.evaluations + 1, failures=failures)
    if not state.failed and found.verdict == "fail" and failures >= rule.failure_limit:
        state = replace(state, failed=True, failed_at=evidence.at, failed_reason=found.reason)
    standing: Standing
    reason = found.reason
    if state.failed:
        standing = "fail"
        if found.verdict == "fail" and state.failed_at != evidence.at:
            reason = f"{found.reason} (failed since t={state.failed_at:.0f}; latched)"
        elif found.verdict != "fail":
            reason = (f"failed earlier and stays failed (latched): {state.failed_reason}; "
                      f"now: {found.reason}")
    elif found.verdict == "fail":
        standing = "hold"
        reason = f"{found.reason} (failure {failures} of {rule.failure_limit} allowed)"
    else:
        standing = found.verdict
    return RuleResult(rule.name, rule.measured_metric, variant, standing, found.verdict,
                      found.measured, found.samples, reason, rule.dry_run, state)


def _judge(rule: Rule, evidence: Evidence, variant: str) -> _Verdict:
    metric = rule.measured_metric
    arm = evidence.candidates.get(variant)
    if arm is None:
        return _missing(rule, f"no evidence for variant {variant!r}", {}, {})
    paired = evidence.paired.get(variant)
    if (rule.metric == "accuracy" and rule.relative == 1.0 and paired is not None
            and paired.labelled_n > 0):
        # Paired labelled predictions: compare on the same requests (McNemar), which
        # needs no accuracy figure of either arm and no separate labels per arm.
        samples = {"labelled_pairs": paired.labelled_n}
        if paired.labelled_n < rule.min_samples:
            return _Verdict("insufficient_data", f"accuracy: {paired.labelled_n} labelled "
                            f"pairs, {rule.min_samples} needed before judging", {}, samples)
        return _mcnemar(rule, paired.champion_only_correct, paired.challenger_only_correct,
                        paired.labelled_n, {}, samples)
    mine = read(metric, evidence, arm)
    theirs = read(metric, evidence, evidence.champion) if rule.relative is not None else None
    measured: dict[str, float | None] = {"value": mine.value}
    samples = {"candidate": mine.n}
    if theirs is not None:
        measured["champion"] = theirs.value
        samples["champion"] = theirs.n
    if mine.value is None or (theirs is not None and theirs.value is None):
        who = variant if mine.value is None else f"the champion {evidence.champion.variant}"
        return _missing(rule, f"no data for {metric} of {who}", measured, samples)
    n = min(samples.values())
    if n < rule.min_samples:
        return _Verdict("insufficient_data", f"{metric}: {n} samples, {rule.min_samples} "
                        "needed before judging", measured, samples)
    if theirs is not None and family_of(rule.metric) == "outcome":
        return _sequential(rule, mine, theirs, measured, samples)
    if theirs is None or theirs.value is None:
        target = rule.threshold if rule.threshold is not None else math.nan
    else:
        target = (rule.relative or 1.0) * theirs.value
    measured["target"] = target
    if family_of(rule.metric) == "service" and metric.endswith("_rate"):
        low, high = stats.wilson(round(mine.value * mine.n), mine.n)
        measured["ci_low"], measured["ci_high"] = low, high
    bound = (f"{rule.relative:g} x champion's {theirs.value:.4g} = {target:.4g}"
             if theirs is not None else f"{target:.4g}")
    held = OPS[rule.op](mine.value, target)
    words = "holds" if held else "does not hold"
    return _Verdict("pass" if held else "fail",
                    f"{metric} = {mine.value:.4g} over {mine.n} samples; "
                    f"{rule.op} {bound} {words}", measured, samples)


def _missing(rule: Rule, why: str, measured: dict[str, float | None],
             samples: dict[str, int]) -> _Verdict:
    verdict: Verdict = {"hold": "insufficient_data", "fail": "fail", "pass": "pass"}[
        rule.missing]  # type: ignore[assignment]
    return _Verdict(verdict, f"{why} (missing data policy: {rule.missing})", measured, samples)


def _direction(rule: Rule, better: bool, worse: bool, what: str,
               measured: dict[str, float | None], samples: dict[str, int]) -> _Verdict:
    # Strict op: must be significantly better. Non-strict: must not be significantly worse.
    strict = rule.op in ("<", ">")
    if worse:
        return _Verdict("fail", f"{what}: significantly worse than the champion", measured,
                        samples)
    if strict and not better:
        return _Verdict("insufficient_data", f"{what}: not yet significantly better than "
                        "the champion", measured, samples)
    word = "significantly better than" if better else "not significantly worse than"
    return _Verdict("pass", f"{what}: {word} the champion", measured, samples)


def _sequential(rule: Rule, mine: Reading, theirs: Reading, measured: dict[str, float | None],
                samples: dict[str, int]) -> _Verdict:
    a, b = theirs.outcome, mine.outcome
    assert a is not None and b is not None  # outcome readings always carry their summary
    relative = rule.relative or 1.0
    test = stats.sequential_test((a.n, a.mean or 0.0, a.variance or 0.0),
                                 (b.n, b.mean or 0.0, b.variance or 0.0),
                                 alpha=rule.alpha, ratio=relative)
    fixed = stats.welch((a.n, a.mean or 0.0, a.variance or 0.0),
                        (b.n, b.mean or 0.0, b.variance or 0.0), alpha=rule.alpha)
    if fixed is not None:
        measured["welch_p"] = fixed.p_value
    if test is None:
        return _Verdict("insufficient_data", f"{rule.metric}: no variance yet, cannot test",
                        measured, samples)
    measured.update(diff=test.diff, ci_low=test.ci_low, ci_high=test.ci_high,
                    p_value=test.p_value)
    higher = rule.op in (">", ">=")
    better = test.ci_low > 0 if higher else test.ci_high < 0
    worse = test.ci_high < 0 if higher else test.ci_low > 0
    what = (f"{rule.metric} {b.mean:.4g} vs {relative:g} x champion's {a.mean:.4g} "
            f"(difference {test.diff:+.4g}, always-valid {100 * (1 - rule.alpha):g}% interval "
            f"{test.ci_low:+.4g}..{test.ci_high:+.4g}, n={b.n}/{a.n})")
    return _direction(rule, better, worse, what, measured, samples)


def _mcnemar(rule: Rule, champion_only: int, challenger_only: int, labelled: int,
             measured: dict[str, float | None], samples: dict[str, int]) -> _Verdict:
    test = stats.mcnemar(champion_only, challenger_only)
    # The paired accuracy difference: only discordant pairs differ between the two.
    measured.update(diff=(challenger_only - champion_only) / labelled, p_value=test.p_value,
                    champion_only_correct=float(champion_only),
                    challenger_only_correct=float(challenger_only))
    significant = test.p_value < rule.alpha
    higher = rule.op in (">", ">=")
    up = challenger_only > champion_only
    better = significant and (up if higher else not up)
    worse = significant and champion_only != challenger_only and not better
    what = (f"accuracy on {labelled} labelled pairs: candidate alone right {challenger_only}, "
            f"champion alone right {champion_only}, McNemar p={test.p_value:.3g} "
            f"({test.method})")
    return _direction(rule, better, worse, what, measured, samples)
