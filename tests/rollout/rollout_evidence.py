"""Builders of evidence for the rollout tests (plain values, no monitoring needed).

A plain module, not a conftest: tests import it by name (tests/rollout is on sys.path)."""

from __future__ import annotations

from typing import Any

from shipyard.rollout.evidence import ArmEvidence, Evidence, Paired

NOW = 1_700_000_000.0


def arm(variant: str, *, version: str = "1", requests: int = 1000, errors: int = 0,
        timeouts: int = 0, p99: float | None = 100.0, **extra: Any) -> ArmEvidence:
    return ArmEvidence(variant=variant, version=version, digest=f"sha-{version}",
                       requests=requests, errors=errors, timeouts=timeouts,
                       latency_ms={"p50": p99 and p99 / 2, "p95": p99 and p99 * 0.9,
                                   "p99": p99}, **extra)


def evidence(candidate: ArmEvidence | None = None, *, champion: ArmEvidence | None = None,
             others: dict[str, ArmEvidence] | None = None, paired: dict[str, Paired] | None
             = None, split: dict[str, float] | None = None,
             observed: dict[str, int] | None = None, at: float = NOW,
             window_s: float = 60.0) -> Evidence:
    champion = champion or arm("champion", version="1")
    candidates = dict(others or {})
    if candidate is not None:
        candidates[candidate.variant] = candidate
    return Evidence(at=at, window_s=window_s, champion=champion, candidates=candidates,
                    paired=paired or {}, configured_split=split or {},
                    observed_split=observed or {})
