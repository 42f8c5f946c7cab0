"""Turning `shipyard deploy` flags into a deployment spec and a new revision."""

from __future__ import annotations

import json
from typing import Any

from shipyard.errors import NotFoundError, UserError
from shipyard.registry.records import Revision
from shipyard.registry.registry import Registry
from shipyard.routing import DeploymentSpec, Fallback


def parse_fallback(text: str) -> tuple[Fallback, str | None]:
    """`error`, `static:{"label": 0}` or `model:NAME:VERSION` -> (fallback, model ref)."""
    kind, _, rest = text.partition(":")
    if kind == "error" and not rest:
        return Fallback(kind="error"), None
    if kind == "static" and rest:
        try:
            value = json.loads(rest)
        except ValueError as exc:
            raise UserError(
                f"Got fallback value {rest[:80]!r}, which is not JSON.",
                hint="Write --fallback 'static:{\"label\": 0}'.",
            ) from exc
        if not isinstance(value, dict) or not value:
            raise UserError(
                "A static fallback must be a JSON object of outputs.",
                hint="Write --fallback 'static:{\"label\": 0}'.",
            )
        return Fallback(kind="static", value=value), None
    if kind == "model" and rest:
        return Fallback(kind="variant", variant="fallback"), rest
    raise UserError(
        f"Got --fallback {text[:80]!r}.", hint="Use error, static:JSON or model:NAME:VERSION."
    )


def deploy_model(
    registry: Registry,
    name: str,
    model_ref: str,
    *,
    owner: str | None,
    reason: str,
    serving: dict[str, Any],
    fallback: str | None,
    monitoring: dict[str, Any] | None = None,
) -> Revision:
    """Deploy `model_ref` as the champion of `name`, keeping earlier serving and monitoring
    settings unless new ones are given."""
    previous: dict[str, Any] = {}
    kept: list[dict[str, Any]] = []
    monitored: dict[str, Any] = {}
    try:
        spec_before = registry.current_revision(name).spec
        previous = spec_before.get("serving", {})
        monitored = spec_before.get("monitoring", {})
        kept = [v for v in spec_before["variants"] if v.get("role") == "fallback"]
    except NotFoundError:
        pass
    variants = [{"name": "champion", "model": model_ref, "role": "champion", "weight": 100}]
    if fallback is None:
        variants += kept
    config = {**previous, **serving}
    if fallback is not None:
        spec_fallback, fallback_ref = parse_fallback(fallback)
        config["fallback"] = spec_fallback.model_dump(mode="json", exclude_none=True)
        if fallback_ref is not None:
            variants.append(
                {"name": "fallback", "model": fallback_ref, "role": "fallback", "weight": 0}
            )
    spec = DeploymentSpec.parse(
        {"variants": variants, "serving": config, "monitoring": monitoring or monitored}
    )
    return registry.deploy(name, spec.to_json(), owner=owner, reason=reason or "deploy")


def rollback(registry: Registry, name: str, *, to: int | None = None, reason: str = "") -> Revision:
    """Re-apply an earlier revision (the one before the current, or number `to`).

    The old revision's variants are pinned to exact versions and digests, whose artifacts are
    still in the store: no rebuild and no download from anywhere else. The rollback is itself
    a new revision, so it is audited and can be undone the same way.
    """
    history = registry.revisions(name)
    current = history[-1]
    if to is None:
        earlier = [r for r in history if r.number < current.number and r.spec != current.spec]
        if not earlier:
            raise UserError(
                f"Deployment {name!r} has no earlier revision to roll back to.",
                hint=f"`shipyard deploy {name} --model ...` to deploy another one.",
            )
        target = earlier[-1]
    else:
        matches = [r for r in history if r.number == to]
        if not matches:
            raise NotFoundError(
                f"Deployment {name!r} has no revision {to}.",
                hint=f"Revisions run 1..{current.number}.",
            )
        target = matches[0]
    why = reason or f"rollback to revision {target.number}"
    return registry.deploy(name, target.spec, reason=why)
