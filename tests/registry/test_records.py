"""Records are plain values with a JSON-friendly `to_dict()` for the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from shipyard.registry import Registry

MakeBundle = Callable[..., Path]


def test_every_record_serialises_to_plain_json(
    sqlite_registry: Registry, make_bundle: MakeBundle
) -> None:
    registry = sqlite_registry
    pushed = registry.push(make_bundle())
    registry.set_alias("iris", "production", "1.0")
    registry.deploy("web", {"variants": [{"name": "champion", "model": "iris:1.0"}]})
    records = [
        pushed,
        registry.resolve("iris"),
        *registry.models(),
        *registry.alias_history("iris"),
        *registry.audit(),
        registry.verify_audit(),
        *registry.deployments(),
        registry.current_revision("web"),
    ]
    for record in records:
        data = record.to_dict()
        assert json.loads(json.dumps(data)) == data


def test_a_version_summary_leaves_out_the_manifest_text(
    sqlite_registry: Registry, make_bundle: MakeBundle
) -> None:
    sqlite_registry.push(make_bundle())
    record = sqlite_registry.resolve("iris")
    summary = record.to_dict()
    assert summary["files"] == 1 and summary["signed"] is False
    assert "manifest_yaml" not in summary
    assert record.manifest().name == "iris"
    assert "manifest_yaml" not in repr(record)


def test_an_audit_check_is_truthy_only_when_intact(sqlite_registry: Registry) -> None:
    assert bool(sqlite_registry.verify_audit()) is True
