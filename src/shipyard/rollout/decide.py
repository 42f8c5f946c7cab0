"""One evaluation of one step: promote, hold, roll back, or wait for more data.

`decide` is pure: the evidence, the rules' memory (`RolloutState`) and the time `now` come
in, a `StepDecision` (with the next state) comes out. The controller persists the state and
the decision records, and applies the outcome. In order:

1. a sample-ratio mismatch (the observed split is not the configured one) rolls back;
2. a rule that failed (after its failure limit; failures latch) rolls back; under
   champion/challenger it knocks that challenger out, and rolls back once none is left;
3. a candidate whose rules all pass, past the step's minimum duration, samples and labels,
   is promoted (to the next step, or finished after the last), once approved if the step
   asks for approval;
4. otherwise, past the step's deadline, the declared terminal action (no rollout is stuck);
5. otherwise hold (waiting on time, approval or failures under their limit) or
   insufficient_data (waiting on traffic, labels or significance), which never fails.

Dry-run rules are evaluated and recorded, and never decide.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from shipyard.errors import UserError
from shipyard.rollout.evidence import Evidence
from shipyard.rollout.explain import explain
from shipyard.rollout.plan import RolloutPlan, Step
from shipyard.rollout.rules import RuleResult, RuleState, evaluate_rule
from shipyard.rollout.stats import Srm, sample_ratio_mismatch

__all__ = ["Outcome", "RolloutState", "StepDecision", "decide", "explain"]

Outcome = Literal["promote", "hold", "rollback", "insufficient_data", "abort"]
SUMMARY_RULE = "decision"  # the `rule` of the one record that carries the step's outcome
SRM_RULE = "sample_ratio"


@dataclass(frozen=True)
class RolloutState:
    """What decide remembers between evaluations: when the step began, each rule's state
    (by "RULE@VARIANT"), and the challengers already knocked out."""

    step_started_at: float
    rules: dict[str, RuleState] = field(default_factory=dict)
    eliminated: tuple[str, ...] = ()

    @classmethod
    def start(cls, now: float) -> RolloutState:
        return cls(step_started_at=now)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "eliminated": list(self.eliminated)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutState:
        return cls(step_started_at=float(data["step_started_at"]),
                   rules={k: RuleState(**v) for k, v in (data.get("rules") or {}).items()},
                   eliminated=tuple(data.get("eliminated") or ()))


@dataclass(frozen=True)
class StepDecision:
    outcome: Outcome
    step: int
    next_step: int | None  # promote: the step to move to; None when finished or stopped
    finished: bool  # promoted past the last step: the winner takes the champion's place
    winner: str | None  # the promoted candidate's variant
    reason: str
    at: float
    rules: list[RuleResult]
    srm: Srm | None
    state: RolloutState  # persist it and pass it to the next decide
    eliminated: tuple[str, ...] = ()  # challengers knocked out by this evaluation

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["rules"] = [r.to_json() for r in self.rules]
        body["srm"] = self.srm.to_json() if self.srm else None
        body["state"] = self.state.to_json()
        body["eliminated"] = list(self.eliminated)
        return body

    def records(self, evidence: Evidence, *, actor: str = "controller") -> list[dict[str, Any]]:
        """Decision rows, each the keyword arguments of `Registry.record_decision`: one per
        rule and candidate, one for the sample-ratio check when it ran, and one summary row
        (rule "decision"). champion/candidate are the arms' model versions."""
        at = datetime.fromtimestamp(self.at, UTC)

        def row(rule: str, outcome: str, variant: str | None, measured: dict[str, Any],
                samples: dict[str, Any], dry_run: bool, reason: str) -> dict[str, Any]:
            arm = evidence.candidates.get(variant) if variant else None
            return {"at": at, "step": self.step, "rule": rule, "outcome": outcome,
                    "measured": measured, "samples": samples, "dry_run": dry_run,
                    "actor": actor, "reason": reason,
                    "champion": evidence.champion.version,
                    "champion_digest": evidence.champion.digest,
                    "candidate": arm.version if arm else None,
                    "candidate_digest": arm.digest if arm else None}

        rows = [row(r.rule, r.outcome, r.variant, r.to_json()["measured"], r.samples,
                    r.dry_run, f"{r.variant}: {r.reason}") for r in self.rules]
        if self.srm is not None:
            srm_outcome = ("fail" if self.srm.mismatch else
                           "pass" if self.srm.sufficient else "insufficient_data")
            rows.append(row(SRM_RULE, srm_outcome, None,
                            {"p_value": self.srm.p_value, "statistic": self.srm.statistic},
                            dict(self.srm.observed), False, self.srm.reason))
        only = next(iter(evidence.candidates)) if len(evidence.candidates) == 1 else None
        rows.append(row(SUMMARY_RULE, self.outcome, self.winner or only, {}, {}, False,
                        self.reason))
        return rows


def decide(plan: RolloutPlan, step_index: int, evidence: Evidence, state: RolloutState,
           now: float, *, approved: bool = False) -> StepDecision:
    """Judge step `step_index` of `plan` on `evidence` at time `now` (seconds)."""
    if not 0 <= step_index < len(plan.steps):
        raise UserError(f"Got step {step_index} for a plan of {len(plan.steps)} steps.",
                        hint="The rollout's recorded step is out of range; abort it.")
    step = plan.steps[step_index]
    active = [v for v in evidence.candidates if v not in state.eliminated]
    results: list[RuleResult] = []
    memory = dict(state.rules)
    for variant in active:
        for rule in plan.rules:
            key = f"{rule.name}@{variant}"
            result = evaluate_rule(rule, evidence, memory.get(key), variant=variant)
            memory[key] = result.state
            results.append(result)
    srm = _srm(evidence, state)
    # The facts every branch below reports; the state keeps each rule's latch and count.
    made = _Maker(plan, step_index, now, results, srm, replace(state, rules=memory),
                  tuple(active))
    if srm is not None and srm.mismatch:
        return made("rollback", f"Step {step_index}: {srm.reason}; traffic is not split as "
                    "configured, so no comparison can be trusted")
    failed = {r.variant: r for r in results if r.outcome == "fail" and not r.dry_run}
    if failed and (plan.strategy != "champion_challenger" or set(active) <= set(failed)):
        first = next(iter(failed.values()))
        return made("rollback", f"Step {step_index}: rule {first.rule!r} failed on "
                    f"{first.variant}: {first.reason}")
    knocked = tuple(failed)  # champion/challenger: out of the race, the others go on
    made = made.knock_out(knocked)
    live = [v for v in active if v not in failed]
    if not live:
        return made("insufficient_data",
                    f"Step {step_index}: no candidate in the evidence yet (waiting for "
                    f"{', '.join(plan.candidates)})", deadline=step)
    ready: list[str] = []
    waits: list[tuple[str, str]] = []  # (hold | insufficient_data, why)
    for variant in live:
        blockers = _blockers(step, step_index, evidence, variant, now - state.step_started_at,
                             [r for r in results if r.variant == variant and not r.dry_run])
        waits.extend(blockers)
        if not blockers:
            ready.append(variant)
    if ready:
        winner = _best(ready, results)
        if step.approval and not approved:
            return made("hold", f"Step {step_index}: {winner} passed every rule; waiting "
                        "for the owner's approval", deadline=step)
        last = step_index + 1 >= len(plan.steps)
        where = "finished: it takes all traffic" if last else f"on to step {step_index + 1}"
        return made("promote", f"Step {step_index}: {winner} passed every rule; {where}",
                    winner=winner)
    kind: Outcome = "hold" if any(k == "hold" for k, _ in waits) else "insufficient_data"
    whys = "; ".join(dict.fromkeys(why for _, why in waits))
    return made(kind, f"Step {step_index}: {whys}", deadline=step)


def _srm(evidence: Evidence, state: RolloutState) -> Srm | None:
    # A window that began before this step mixes two splits: never test it (a false alarm
    # right after every weight change otherwise). The controller measures from step start.
    if not evidence.configured_split or evidence.started < state.step_started_at:
        return None
    # The controller looks every few seconds at counts that only grow: a test valid at any
    # look, or chance alone rolls back a fairly split rollout.
    return sample_ratio_mismatch(evidence.observed_split, evidence.configured_split,
                                 method="sequential")


def _blockers(step: Step, index: int, evidence: Evidence, variant: str, elapsed: float,
              rules: list[RuleResult]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if elapsed < step.min_duration_s:
        out.append(("hold", f"{elapsed:.0f}s of the step's minimum {step.min_duration_s:.0f}s"))
    arm = evidence.candidates[variant]
    if arm.requests < step.min_samples:
        out.append(("insufficient_data", f"{variant} answered {arm.requests} of the "
                    f"{step.min_samples} requests step {index} needs"))
    if step.wait_for_labels:
        paired = evidence.paired.get(variant)
        counts = ({"pairs": paired.labelled_n} if paired is not None and paired.labelled_n
                  else {variant: arm.labelled(), evidence.champion.variant:
                        evidence.champion.labelled()})
        short = {k: v for k, v in counts.items() if v < step.wait_for_labels}
        if short:
            shown = ", ".join(f"{k} {v}" for k, v in short.items())
            out.append(("insufficient_data", f"waiting for {step.wait_for_labels} labelled "
                        f"predictions per arm ({shown})"))
    for result in rules:
        if result.outcome in ("hold", "insufficient_data"):
            out.append((result.outcome, f"rule {result.rule!r} on {variant}: {result.reason}"))
    return out


def _best(ready: list[str], results: list[RuleResult]) -> str:
    # Several challengers beat the champion: the one with the largest margin on the first
    # rule that measured a difference, else the first in the evidence's order.
    def margin(variant: str) -> float:
        for r in results:
            if r.variant == variant and not r.dry_run:
                value, target = r.measured.get("diff"), None
                if value is None:
                    value, target = r.measured.get("value"), r.measured.get("target")
                if value is not None:
                    return value - (target or 0.0)
        return 0.0

    return max(ready, key=lambda v: (margin(v), -ready.index(v))) if len(ready) > 1 \
        else ready[0]


@dataclass(frozen=True)
class _Maker:
    """Builds the StepDecision with what every outcome shares."""

    plan: RolloutPlan
    step: int
    now: float
    rules: list[RuleResult]
    srm: Srm | None
    state: RolloutState
    candidates: tuple[str, ...]
    knocked: tuple[str, ...] = ()

    def knock_out(self, variants: tuple[str, ...]) -> _Maker:
        state = replace(self.state, eliminated=tuple(
            dict.fromkeys((*self.state.eliminated, *variants))))
        return replace(self, state=state, knocked=variants)

    def __call__(self, outcome: Outcome, reason: str, *, winner: str | None = None,
                 deadline: Step | None = None) -> StepDecision:
        state = self.state
        if self.knocked:
            reason += f" ({', '.join(self.knocked)} knocked out by a failed rule)"
        elapsed = self.now - state.step_started_at
        if deadline is not None and elapsed >= deadline.deadline_s:
            action: Outcome = "rollback" if deadline.on_deadline == "rollback" else (
                "abort" if deadline.on_deadline == "abort" else "promote")
            reason = (f"Step {self.step}: deadline of {deadline.deadline_s:.0f}s reached "
                      f"after {elapsed:.0f}s without a decision, so {deadline.on_deadline} "
                      f"as the plan declares. It was: {reason}")
            outcome = action
            if action == "promote" and winner is None:
                # Only single-candidate strategies may promote on a deadline (plan.py).
                winner = next((v for v in self.candidates if v not in state.eliminated), None)
        next_step: int | None = None
        finished = False
        if outcome == "promote":
            if self.step + 1 < len(self.plan.steps):
                next_step = self.step + 1
                state = replace(state, step_started_at=self.now)
            else:
                finished = True
        return StepDecision(outcome, self.step, next_step, finished, winner, reason,
                            self.now, self.rules, self.srm, state,
                            self.knocked)
