"""`shipyard rollout report`: the arms of the latest A/B rollout compared on the product
metrics that arrived as feedback.

Per metric and treatment arm against the control (the first arm): each arm's n and mean, the
difference with an always-valid confidence interval and p-value from the mixture sequential
test (safe to read at every look: peeking does not inflate false positives), Welch's test as
the fixed-horizon view, and a sample-ratio-mismatch check of the requests each arm answered
against the configured split.
"""

from __future__ import annotations

from typing import Any

from shipyard.errors import NotFoundError
from shipyard.monitoring.recordstore import RecordStore
from shipyard.registry.registry import Registry
from shipyard.rollout.gather import outcomes
from shipyard.rollout.plan import RolloutPlan
from shipyard.rollout.stats import sample_ratio_mismatch, sequential_test, welch
from shipyard.routing import DeploymentSpec


def ab_report(registry: Registry, name: str, *, alpha: float = 0.05) -> dict[str, Any]:
    found = [r for r in registry.rollouts(name) if r.strategy == "ab"]
    if not found:
        raise NotFoundError(f"Deployment {name!r} has had no A/B rollout.",
                            hint=f"Start one: shipyard rollout start {name} --strategy ab ...")
    record = found[-1]
    plan = RolloutPlan.parse(record.plan)
    assert plan.ab is not None
    arms = list(plan.ab.split)
    config = DeploymentSpec.parse(registry.current_revision(name).spec).monitoring
    store = RecordStore.for_config(registry.database, config.records, registry.settings.home)
    records = store.records(name, record.created_at, None)
    feedback = store.feedback(name, record.created_at, None)
    spec = registry.revisions(name)[record.revision - 1].spec
    versions = {v["name"]: v["model"].split(":", 1)[1] for v in spec["variants"]}
    per_arm = {arm: outcomes(records, feedback, arm, versions.get(arm, "")) for arm in arms}
    observed = {arm: int((records["variant"] == arm).sum()) if len(records) else 0
                for arm in arms}
    srm = sample_ratio_mismatch(observed, plan.ab.split)
    comparisons = []
    metrics = sorted({m for values in per_arm.values() for m in values})
    control = arms[0]
    for metric in metrics:
        base = per_arm[control].get(metric)
        comparisons.append(_row(metric, control, base, None, None, control=True))
        for arm in arms[1:]:
            other = per_arm[arm].get(metric)
            seq = welch_result = None
            if base and other and base.mean is not None and other.mean is not None:
                a = (base.n, base.mean, base.variance or 0.0)
                b = (other.n, other.mean, other.variance or 0.0)
                seq = sequential_test(a, b, alpha=alpha)
                welch_result = welch(a, b, alpha=alpha)
            comparisons.append(_row(metric, arm, other, seq, welch_result))
    decided = [c for c in comparisons if c["verdict"] not in ("control", "not enough data",
                                                                "no difference yet")]
    summary = (f"rollout {record.id} ({record.status}); "
               + (srm.reason if srm.mismatch else "traffic split as configured") + "; "
               + (", ".join(f"{c['arm']} {c['verdict']} on {c['metric']}" for c in decided)
                  or "no arm differs yet"))
    return {"deployment": name, "rollout": record.id, "status": record.status,
            "arms": arms, "split": plan.ab.split, "observed": observed,
            "srm": srm.to_json(), "comparisons": comparisons, "summary": summary}


def _row(metric: str, arm: str, outcome: Any, seq: Any, fixed: Any, *,
         control: bool = False) -> dict[str, Any]:
    if control:
        verdict = "control"
    elif seq is None:
        verdict = "not enough data"
    elif seq.rejected:
        verdict = "better" if seq.diff > 0 else "worse"
    else:
        verdict = "no difference yet"
    return {
        "metric": metric,
        "arm": arm,
        "n": outcome.n if outcome else 0,
        "mean": outcome.mean if outcome else None,
        "difference": seq.diff if seq else None,
        "interval": f"[{seq.ci_low:.4g}, {seq.ci_high:.4g}]" if seq else "-",
        "p_value": seq.p_value if seq else None,
        "welch_p": fixed.p_value if fixed else None,
        "verdict": verdict,
    }
