"""Deployments and revisions: numbering, pinning, history and the change token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shipyard.errors import BadReferenceError, ConflictError, NotFoundError, UserError
from shipyard.registry import Registry

MakeBundle = Callable[..., Path]


def _spec(model: str, **extra: Any) -> dict[str, Any]:
    return {"variants": [{"name": "champion", "model": model, "weight": 100, **extra}]}


@pytest.fixture
def pushed(registry: Registry, make_bundle: MakeBundle) -> Registry:
    registry.push(make_bundle(version="1.0", content=b"1"))
    registry.push(make_bundle(version="2.0", content=b"2"))
    registry.set_alias("iris", "production", "1.0")
    return registry


def test_each_deploy_appends_the_next_revision(pushed: Registry) -> None:
    first = pushed.deploy("web", _spec("iris:1.0"), owner="team-a", actor="ana", reason="launch")
    second = pushed.deploy("web", _spec("iris:2.0"), actor="bo", reason="retrain")
    assert (first.number, second.number) == (1, 2)
    assert pushed.current_revision("web") == second
    assert [r.number for r in pushed.revisions("web")] == [1, 2]
    assert [(r.actor, r.reason) for r in pushed.revisions("web")] == [
        ("ana", "launch"),
        ("bo", "retrain"),
    ]
    [deployment] = pushed.deployments()
    assert (deployment.name, deployment.owner, deployment.revision) == ("web", "team-a", 2)


def test_variants_are_pinned_to_a_version_and_its_digest(pushed: Registry) -> None:
    spec = {**_spec("iris@production"), "rollout": {"strategy": "direct"}}
    revision = pushed.deploy("web", spec)
    variant = revision.spec["variants"][0]
    assert variant["model"] == "iris:1.0"
    assert variant["version_digest"] == pushed.resolve("iris:1.0").digest
    assert revision.spec["rollout"] == {"strategy": "direct"}
    pushed.set_alias("iris", "production", "2.0")
    assert pushed.current_revision("web").spec["variants"][0]["model"] == "iris:1.0"
    assert spec["variants"][0]["model"] == "iris@production"  # the caller's dict is untouched


def test_a_wrong_version_digest_is_a_conflict(pushed: Registry) -> None:
    with pytest.raises(ConflictError, match="version_digest"):
        pushed.deploy("web", _spec("iris:1.0", version_digest="0" * 64))
    assert pushed.deployments() == []


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({}, UserError),
        ({"variants": []}, UserError),
        ({"variants": ["iris:1.0"]}, UserError),
        (
            {"variants": [{"name": "a", "model": "iris:1.0"}, {"name": "a", "model": "iris:2.0"}]},
            UserError,
        ),
        ({"variants": [{"name": "a"}]}, UserError),
        ({"variants": [{"name": "a", "model": "iris:1.0", "weight": object()}]}, UserError),
        (_spec("iris:../1"), BadReferenceError),
        (_spec("ghost:1.0"), NotFoundError),
    ],
)
def test_a_bad_spec_is_refused_and_writes_nothing(
    pushed: Registry, spec: dict[str, Any], error: type[Exception]
) -> None:
    token = pushed.change_token()
    with pytest.raises(error):
        pushed.deploy("web", spec)
    assert pushed.deployments() == [] and pushed.change_token() == token


def test_the_change_token_grows_with_every_revision(pushed: Registry) -> None:
    start = pushed.change_token()
    assert start == 0
    pushed.deploy("web", _spec("iris:1.0"))
    after_one = pushed.change_token()
    pushed.deploy("batch", _spec("iris:2.0"))
    assert start < after_one < pushed.change_token()


def test_deploys_are_audited(pushed: Registry) -> None:
    pushed.deploy("web", _spec("iris@production"), actor="ana", reason="launch")
    entry = pushed.audit(target="web")[0]
    assert (entry.action, entry.actor) == ("deploy", "ana")
    assert entry.details == {"revision": 1, "reason": "launch", "models": ["iris:1.0"]}
    assert pushed.verify_audit().ok


def test_unknown_deployments_are_not_found(pushed: Registry) -> None:
    with pytest.raises(NotFoundError, match="no deployment"):
        pushed.current_revision("ghost")
    with pytest.raises(NotFoundError):
        pushed.revisions("ghost")
    with pytest.raises(BadReferenceError):
        pushed.deploy("Bad Name", _spec("iris:1.0"))
