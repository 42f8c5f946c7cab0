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
            raise UserError(f"Got fallback value {rest[:80]!r}, which is not JSON.",
                            hint='Write --fallback \'static:{"label": 0}\'.') from exc
        if not isinstance(value, dict) or not value:
            raise UserError("A static fallback must be a JSON object of outputs.",
                            hint='Write --fallback \'static:{"label": 0}\'.')
        return Fallback(kind="static", value=value), None
    if kind == "model" and rest:
        return Fallback(kind="variant", variant="fallback"), rest
    raise UserError(f"Got --fallback {text[:80]!r}.",
                    hint="Use error, static:JSON or model:NAME:VERSION.")


def deploy_model(registry: Registry, name: str, model_ref: str, *, owner: str | None,
                 reason: str, serving: dict[str, Any], fallback: str | None) -> Revision:
    """Deploy `model_ref` as the champion of `name`, keeping earlier serving settings."""
    previous: dict[str, Any] = {}
    kept: list[dict[str, Any]] = []
    try:
        spec_before = registry.current_revision(name).spec
        previous = spec_before.get("serving", {})
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
            variants.append({"name": "fallback", "model": fallback_ref, "role": "fallback",
                             "weight": 0})
    spec = DeploymentSpec.parse({"variants": variants, "serving": config})
    return registry.deploy(name, spec.to_json(), owner=owner, reason=reason or "deploy")
