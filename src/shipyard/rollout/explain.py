"""`explain`: "why was it rolled back?" answered in plain words from the decision records.

It reads the rows `StepDecision.records` wrote, or the registry's `DecisionRecord`s
(mappings or objects with the same names: at, step, rule, outcome, measured, samples,
dry_run, actor, reason, candidate, champion) and tells the story of the last decision:
what happened, when, on which versions, and the evidence behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["explain"]

FIELDS = ("at", "step", "rule", "outcome", "measured", "samples", "dry_run", "actor",
          "reason", "candidate", "champion")
SUMMARY_RULES = ("decision", None, "")  # manual actions may carry no rule name
VERBS = {
    "rollback": "Rolled back", "abort": "Aborted", "promote": "Promoted",
    "promote_manual": "Promoted by hand", "hold": "Holding", "pause": "Paused",
    "resume": "Resumed", "approve": "Approved", "insufficient_data": "Waiting for data",
}
FINAL = ("rollback", "abort", "promote_manual")


def _row(record: Any) -> dict[str, Any]:
    if isinstance(record, Mapping):
        return {k: record.get(k) for k in FIELDS}
    return {k: getattr(record, k, None) for k in FIELDS}


def _when(at: Any) -> str:
    if isinstance(at, datetime):
        moment = at if at.tzinfo else at.replace(tzinfo=UTC)
    elif isinstance(at, int | float):
        moment = datetime.fromtimestamp(float(at), UTC)
    else:
        return "at an unknown time"
    return moment.astimezone(UTC).strftime("on %Y-%m-%d %H:%M:%S UTC")


def _key(row: dict[str, Any]) -> float:
    at = row["at"]
    if isinstance(at, datetime):
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    return float(at) if isinstance(at, int | float) else float("-inf")


def _figures(row: dict[str, Any]) -> str:
    measured = row.get("measured") or {}
    samples = row.get("samples") or {}
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
             for k, v in measured.items() if v is not None]
    parts += [f"n[{k}]={v}" for k, v in samples.items()]
    return f" [{', '.join(parts)}]" if parts else ""


def explain(decisions: Iterable[Any]) -> str:
    """Plain words for the latest decision of a rollout and the evidence behind it."""
    rows = sorted((_row(r) for r in decisions), key=_key)  # stable: ties keep their order
    if not rows:
        return "No decisions recorded yet: the rollout has not been evaluated."
    summaries = [r for r in rows if r["rule"] in SUMMARY_RULES]
    final = next((r for r in reversed(summaries) if r["outcome"] in FINAL), None)
    last = final or (summaries[-1] if summaries else rows[-1])
    outcome = str(last["outcome"] or "")
    verb = VERBS.get(outcome, f"Recorded {outcome}" if outcome else "Recorded a decision")
    versions = ""
    if last["candidate"] or last["champion"]:
        versions = (f" (candidate {last['candidate'] or '?'}, champion "
                    f"{last['champion'] or '?'})")
    who = f" by {last['actor']}" if last["actor"] else ""
    step = f" at step {last['step']}" if last["step"] is not None else ""
    lines = [f"{verb}{step} {_when(last['at'])}{who}{versions}."]
    if last["reason"]:
        lines.append(f"Why: {last['reason']}")
    same = [r for r in rows if r["at"] == last["at"] and r["rule"] not in SUMMARY_RULES]
    failing = [r for r in same if r["outcome"] == "fail" and not r["dry_run"]]
    waiting = [r for r in same if r["outcome"] in ("hold", "insufficient_data")
               and not r["dry_run"]]
    dry = [r for r in same if r["outcome"] == "fail" and r["dry_run"]]
    for title, group in (("Failed", failing), ("Waiting on", waiting),
                         ("Dry-run rules that would have failed (they never decide)", dry)):
        if group:
            lines.append(f"{title}:")
            lines += [f"  - {r['rule']} ({r['candidate'] or '?'}): {r['reason']}"
                      f"{_figures(r)}" for r in group]
    if last["outcome"] in ("rollback", "abort"):
        first_fail = next((r for r in rows if r["outcome"] == "fail" and not r["dry_run"]
                           and r["rule"] not in SUMMARY_RULES), None)
        if first_fail is not None and first_fail["at"] != last["at"]:
            lines.append(f"The first failed check was {first_fail['rule']} "
                         f"{_when(first_fail['at'])}: {first_fail['reason']}")
    lines.append(f"{len(summaries)} evaluation(s) recorded.")
    return "\n".join(lines)
