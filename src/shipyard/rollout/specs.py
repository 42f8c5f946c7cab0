"""The deployment spec of each rollout step: who serves, with what share, in which role.

The champion is always the first variant and candidates come after it, so raising a canary's
share only moves the boundary down and keys already on the canary stay there (monotone
ramping; see routing.Router). The baseline revision's serving and monitoring config are kept.
"""

from __future__ import annotations

from typing import Any

from shipyard.errors import ConfigError
from shipyard.rollout.plan import RolloutPlan

CHAMPION = "champion"
DEFAULT_WEIGHT = {"direct": 100.0, "shadow": 0.0, "champion_challenger": 0.0}


def candidate_names(plan: RolloutPlan) -> list[str]:
    """Variant names of the candidates, in the plan's order."""
    if plan.strategy == "ab":
        assert plan.ab is not None  # the plan refuses an A/B plan without it
        return list(plan.ab.split)[1:]
    if plan.strategy == "champion_challenger":
        return [f"challenger-{i + 1}" for i in range(len(plan.candidates))]
    return {"canary": ["canary"], "shadow": ["shadow"], "direct": [CHAMPION]}[plan.strategy]


def champion_name(plan: RolloutPlan) -> str:
    if plan.strategy == "ab":
        assert plan.ab is not None
        return next(iter(plan.ab.split))
    return CHAMPION


def step_spec(baseline: dict[str, Any], plan: RolloutPlan, step: int,
              candidates: list[str]) -> dict[str, Any]:
    """The spec that serves step `step`; `candidates` are the pinned candidate refs."""
    champion = _champion(baseline)
    base = {k: v for k, v in baseline.items() if k != "variants"}
    chosen = plan.steps[step].weight if plan.steps else None
    weight = float(chosen) if chosen is not None else DEFAULT_WEIGHT.get(plan.strategy, 0.0)
    names = candidate_names(plan)
    if plan.strategy == "direct":
        return {**base, "variants": [_variant(CHAMPION, candidates[0], "champion", 100)]}
    if plan.strategy == "canary":
        variants = [_variant(CHAMPION, champion["model"], "champion", 100 - weight,
                             champion.get("version_digest")),
                    _variant(names[0], candidates[0], "canary", weight)]
        if weight >= 100:
            variants[0]["weight"] = 0.0
        return {**base, "variants": variants}
    if plan.strategy == "shadow":
        return {**base, "variants": [
            _variant(CHAMPION, champion["model"], "champion", 100,
                     champion.get("version_digest")),
            _variant(names[0], candidates[0], "shadow", 0),
        ]}
    if plan.strategy == "champion_challenger":
        role = "shadow" if weight <= 0 else "challenger"
        share = weight / len(candidates) if weight > 0 else 0.0
        return {**base, "variants": [
            _variant(CHAMPION, champion["model"], "champion", 100 - weight,
                     champion.get("version_digest")),
            *(_variant(name, ref, role, share) for name, ref in zip(names, candidates,
                                                                     strict=True)),
        ]}
    assert plan.ab is not None
    arms = list(plan.ab.split.items())
    control, rest = arms[0], arms[1:]
    if len(rest) != len(candidates):
        raise ConfigError(
            f"The A/B split names {len(rest)} treatment arm(s) for {len(candidates)} model(s).",
            hint="Name one arm for the champion (first) and one per candidate model.",
        )
    routing = {"sticky_key": plan.ab.key, "require_key": True}
    return {**base, "routing": routing, "variants": [
        _variant(control[0], champion["model"], "arm", control[1],
                 champion.get("version_digest")),
        *(_variant(name, ref, "arm", share) for (name, share), ref in zip(rest, candidates,
                                                                          strict=True)),
    ]}


def final_spec(baseline: dict[str, Any], ref: str, digest: str | None = None) -> dict[str, Any]:
    """The promoted winner alone, as the champion."""
    base = {k: v for k, v in baseline.items() if k not in ("variants", "routing")}
    return {**base, "variants": [_variant(CHAMPION, ref, "champion", 100, digest)]}


def _champion(spec: dict[str, Any]) -> dict[str, Any]:
    for variant in spec.get("variants", []):
        if variant.get("role", "champion") == "champion":
            return dict(variant)
    raise ConfigError("The deployment's current revision has no champion to compare with.",
                      hint="Deploy a champion first: shipyard deploy NAME --model REF.")


def _variant(name: str, model: str, role: str, weight: float,
             digest: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"name": name, "model": model, "role": role,
                             "weight": round(float(weight), 6)}
    if digest:
        found["version_digest"] = digest
    return found
