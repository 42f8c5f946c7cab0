"""The rollout controller: evaluates active rollouts at their cadence and moves traffic.

It runs inside a server (it reads that server's monitor) and owns a rollout only while it
holds the rollout's lease in the registry; another server takes over once the lease
expires, so a kill -9 loses nothing: the step, its start, every rule's latched state and the
traffic split are all recorded, and the next owner continues from them. Each evaluation
writes its decision records (rule, measured values, sample sizes, outcome, both versions and
digests); each move writes a new revision in the same transaction as the rollout's new state.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from shipyard.errors import ShipyardError
from shipyard.monitoring.monitor import Monitor
from shipyard.registry.registry import Registry
from shipyard.registry.rollouts import RolloutRecord
from shipyard.rollout.decide import StepDecision, decide
from shipyard.rollout.evidence import Evidence
from shipyard.rollout.gather import gather
from shipyard.rollout.manage import fresh_state, utc
from shipyard.rollout.plan import RolloutPlan
from shipyard.rollout.specs import candidate_names, champion_name, final_spec, step_spec

log = logging.getLogger("shipyard.rollout")

LEASE_S = 10.0
SWITCH_S = 2.0  # servers follow a new revision within a poll (1 s by default) and a second


@dataclass
class Controller:
    """One per server process; `tick(names)` is called about once a second."""

    registry: Registry
    monitor: Monitor
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    lease_s: float = LEASE_S
    _last: dict[int, float] = field(default_factory=dict)

    def tick(self, names: list[str], now: float | None = None) -> list[StepDecision]:
        made = []
        for name in names:
            try:
                decision = self.step(name, time.time() if now is None else now)
            except ShipyardError as exc:
                log.warning("rollout of %s not evaluated: %s", name, exc.message)
                continue
            except Exception:
                log.exception("rollout of %s not evaluated", name)
                continue
            if decision is not None:
                made.append(decision)
        return made

    def step(self, name: str, now: float) -> StepDecision | None:
        record = self.registry.active_rollout(name)
        if record is None or record.status != "running":
            return None
        if not self.registry.acquire_lease(record.id, self.owner, self.lease_s, utc(now)):
            return None
        record = self.registry.rollout(record.id)  # the lease bumps the generation
        plan = RolloutPlan.parse(record.plan)
        if now - self._last.get(record.id, 0.0) < plan.interval_s:
            return None
        self._last[record.id] = now
        evidence = self.evidence(record, plan, now)
        state = fresh_state(record)
        approved = any(d.outcome == "approve" and d.step == record.step
                       for d in self.registry.decisions(record.id, limit=200))
        decision = decide(plan, record.step, evidence, state, now, approved=approved)
        for row in decision.records(evidence):
            row["champion"] = record.champion
            row["champion_digest"] = record.champion_digest
            row["candidate"] = record.candidate
            row["candidate_digest"] = record.candidate_digest
            row["actor"] = f"controller {self.owner}"
            self.registry.record_decision(record.id, **row)
        self.act(record, plan, decision, evidence)
        return decision

    def evidence(self, record: RolloutRecord, plan: RolloutPlan, now: float) -> Evidence:
        current = self.registry.current_revision(record.deployment)
        spec = current.spec
        versions = {v["name"]: v["model"].split(":", 1)[1] for v in spec["variants"]}
        digests = {v["name"]: v.get("version_digest") for v in spec["variants"]}
        champion = champion_name(plan)
        candidates = {n: versions[n] for n in candidate_names(plan) if n in versions}
        if plan.strategy == "direct":
            candidates = {champion: versions[champion]}
        # The window is this step only, from when this server answers with the step's
        # revision (loading and warming it may take longer than any fixed grace): mixing
        # two splits would fake a ratio mismatch. A monitor fed by no fleet here falls back
        # on the grace.
        started = record.step_started_at.timestamp() + SWITCH_S
        live = self.monitor.live_since(record.deployment, current.number)  # inf: not yet
        window = max(0.0, now - (started if live is None else max(started, live)))
        return gather(
            self.monitor, record.deployment,
            champion=(champion, versions.get(champion, "")),
            candidates=candidates,
            configured_split={v["name"]: float(v.get("weight", 0)) for v in spec["variants"]
                              if v.get("role") not in ("shadow", "fallback")},
            window_s=window, since=record.created_at.timestamp(), now=now, digests=digests,
        )

    def act(self, record: RolloutRecord, plan: RolloutPlan, decision: StepDecision,
            evidence: Evidence) -> RolloutRecord:
        state = {"decide": decision.state.to_json(), "observed_split": evidence.observed_split}
        actor = f"controller {self.owner}"
        baseline = self.registry.revisions(record.deployment)[record.baseline_revision - 1].spec
        update: dict[str, Any] = {"generation": record.generation, "actor": actor,
                                  "reason": decision.reason[:2000], "state": state}
        if decision.outcome in ("rollback", "abort"):
            status = "rolled_back" if decision.outcome == "rollback" else "aborted"
            log.warning("rollout %s of %s: %s (%s)", record.id, record.deployment, status,
                        decision.reason)
            return self.registry.update_rollout(record.id, status=status,
                                                final_reason=decision.reason[:2000],
                                                spec=baseline, **update)
        if decision.outcome == "promote" and decision.finished:
            winner = self._winner_ref(record, plan, decision)
            log.info("rollout %s of %s: promoted %s", record.id, record.deployment, winner)
            return self.registry.update_rollout(record.id, status="promoted",
                                                final_reason=decision.reason[:2000],
                                                spec=final_spec(baseline, winner), **update)
        if decision.outcome == "promote" and decision.next_step is not None:
            candidates = self._candidate_refs(record, plan)
            fresh = {"decide": {**decision.state.to_json(), "step_started_at": evidence.at},
                     "observed_split": {}}
            return self.registry.update_rollout(
                record.id, step=decision.next_step, step_started_at=utc(evidence.at),
                spec=step_spec(baseline, plan, decision.next_step, candidates),
                **{**update, "state": fresh},
            )
        return self.registry.update_rollout(record.id, **update)

    def _candidate_refs(self, record: RolloutRecord, plan: RolloutPlan) -> list[str]:
        spec = self.registry.current_revision(record.deployment).spec
        by_name = {v["name"]: v["model"] for v in spec["variants"]}
        names = candidate_names(plan)
        return [by_name.get(n, record.candidate) for n in names]

    def _winner_ref(self, record: RolloutRecord, plan: RolloutPlan,
                    decision: StepDecision) -> str:
        spec = self.registry.current_revision(record.deployment).spec
        by_name = {v["name"]: v["model"] for v in spec["variants"]}
        if decision.winner and decision.winner in by_name:
            return by_name[decision.winner]
        return record.candidate
