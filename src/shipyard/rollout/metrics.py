"""The metrics a rollout rule may name, and how each is read from the evidence.

A rule naming a metric outside this registry is refused when the plan is parsed, with the
nearest known names, rather than holding forever at run time for a figure that never comes.

| family | names | sample size |
|---|---|---|
| service | error_rate, timeout_rate, fallback_rate, bad_input_rate, latency_p50_ms, latency_p95_ms, latency_p99_ms | requests |
| drift | drift.inputs, drift.outputs (drifted fields), drift.psi.KEY, drift.js.KEY, drift.ks.KEY, drift.cramers_v.KEY, drift.input.KEY, drift.output.KEY (1 when drifted) | requests |
| confidence | confidence.top.mean, confidence.margin.mean (any confidence.top/margin.STAT) | requests |
| paired | agreement, disagreement, diff.mean, diff.std, diff.p50, diff.p99 | pairs |
| performance | accuracy, precision_macro, recall_macro, f1_macro, roc_auc, rmse, mae; per slice METRIC.FIELD=VALUE | labelled predictions |
| outcome | outcome.NAME (feedback: outcome.thumbs, outcome.score, ...) | outcomes |
"""  # noqa: E501

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from shipyard.rollout.evidence import ArmEvidence, Evidence, Outcome, Paired

__all__ = ["Family", "Reading", "family_of", "read", "suggest"]

Family = Literal["service", "drift", "confidence", "paired", "performance", "outcome"]

SERVICE = ("error_rate", "timeout_rate", "fallback_rate", "bad_input_rate",
           "latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
PERFORMANCE = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc",
               "rmse", "mae")
PAIRED = ("agreement", "disagreement", "diff.mean", "diff.std", "diff.p50", "diff.p99")
LOWER_IS_BETTER = ("rmse", "mae")
_KEY = r"[A-Za-z0-9_][A-Za-z0-9_.:/\[\]-]{0,199}"
_SLICE = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}=[^\s]{1,100}"
PATTERNS: tuple[tuple[Family, re.Pattern[str]], ...] = (
    ("service", re.compile("|".join(re.escape(n) for n in SERVICE))),
    ("drift", re.compile(r"drift\.(inputs|outputs)")),
    ("drift", re.compile(rf"drift\.(psi|js|ks|cramers_v|input|output)\.{_KEY}")),
    ("confidence", re.compile(r"confidence\.(top|margin)\.[a-z0-9_]{1,32}")),
    ("paired", re.compile("|".join(re.escape(n) for n in PAIRED))),
    ("performance", re.compile(rf"({'|'.join(PERFORMANCE)})(\.{_SLICE})?")),
    ("outcome", re.compile(r"outcome\.[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")),
)
EXAMPLES = (*SERVICE, "drift.inputs", "drift.outputs", "drift.psi.KEY", "confidence.top.mean",
            *PAIRED, *PERFORMANCE, "accuracy.FIELD=VALUE", "outcome.thumbs", "outcome.score")
SLICE_PATTERN = re.compile(_SLICE)


def family_of(metric: str) -> Family | None:
    """The family of a known metric name, None for an unknown one."""
    for family, pattern in PATTERNS:
        if pattern.fullmatch(metric):
            return family
    return None


def suggest(metric: str) -> str:
    """A hint naming the closest known metrics."""
    close = difflib.get_close_matches(metric, EXAMPLES, n=3, cutoff=0.5)
    names = ", ".join(close) if close else ", ".join(EXAMPLES[:8]) + ", ..."
    return f"Known metrics include {names} (docs/rollouts.md lists them all)."


@dataclass(frozen=True)
class Reading:
    """One metric of one arm: its value (None: no data) and the sample it rests on."""

    value: float | None
    n: int
    outcome: Outcome | None = None  # feedback outcomes keep their summary for the tests


def read(metric: str, evidence: Evidence, arm: ArmEvidence) -> Reading:
    """The value of `metric` for `arm`; paired metrics read the arm's pairing with the
    champion (so reading them for the champion itself gives no data)."""
    family = family_of(metric)
    if family == "paired":
        return _paired(metric, evidence.paired.get(arm.variant))
    if family == "outcome":
        outcome = arm.outcomes.get(metric.removeprefix("outcome."))
        if outcome is None:
            return Reading(None, 0)
        return Reading(outcome.mean, outcome.n, outcome)
    if family == "performance":
        _base, dot, where = metric.partition(".")
        return Reading(arm.figures.get(metric), arm.labelled(f".{where}" if dot else ""))
    n = arm.requests
    if metric == "error_rate":
        return Reading(arm.errors / n if n else None, n)
    if metric == "timeout_rate":
        return Reading(arm.timeouts / n if n else None, n)
    if metric.startswith("latency_p"):
        key = metric.removeprefix("latency_").removesuffix("_ms")
        value = arm.latency_ms.get(key)
        return Reading(value if value is not None else arm.figures.get(metric), n)
    return Reading(arm.figures.get(metric), n)


def _paired(metric: str, paired: Paired | None) -> Reading:
    if paired is None or paired.n == 0:
        return Reading(None, 0)
    if metric == "agreement":
        return Reading(paired.agree / paired.n, paired.n)
    if metric == "disagreement":
        return Reading(1 - paired.agree / paired.n, paired.n)
    value = (paired.diffs or {}).get(metric.removeprefix("diff."))
    return Reading(value, paired.n if value is not None else 0)
