from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from shipyard import api
from shipyard.bundle.check import CODES, is_fragile


def copy(packaged: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "b"
    shutil.copytree(packaged, dest)
    return dest


def edit(folder: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = folder / "shipyard.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def codes(folder: Path) -> set[str]:
    return {f.code for f in api.check(folder)}


def test_complete_bundle_is_not_fragile(packaged):
    findings = api.check(packaged)
    assert not is_fragile(findings), findings
    assert {f.code for f in findings} <= {"unsigned"}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda d: d.pop("owner"), "missing-owner"),
        (lambda d: d.pop("evaluation"), "missing-evaluation"),
        (lambda d: d.pop("schema"), "missing-schema"),
        (lambda d: d.pop("profile"), "missing-profile"),
        (lambda d: d.pop("dependencies"), "missing-dependencies"),
        (lambda d: d["dependencies"]["packages"].update({"numpy": ">=1.0"}), "unpinned-dependency"),
        (
            lambda d: d["evaluation"]["metrics"][0].update({"threshold": 0.999}),
            "metric-below-threshold",
        ),
        (lambda d: d["profile"]["inputs"].pop("mean_radius"), "profile-mismatch"),
        (lambda d: d["schema"]["inputs"][0].update({"name": "radius_renamed"}), "schema-rejected"),
        (lambda d: d["schema"]["outputs"].pop(), "output-mismatch"),
        (lambda d: d["artifacts"][0].update({"sha256": "0" * 64}), "hash-mismatch"),
        (lambda d: d.update({"runtime": {"kind": "tensorflow"}}), "load-failed"),
        (lambda d: d.update({"name": "Bad Name"}), "manifest-invalid"),
    ],
)
def test_each_missing_or_inconsistent_item_is_found(packaged, tmp_path, change, code):
    folder = copy(packaged, tmp_path)
    edit(folder, change)
    findings = api.check(folder)
    assert code in {f.code for f in findings}
    assert is_fragile(findings)
    found = next(f for f in findings if f.code == code)
    assert found.severity == CODES[code][0] and found.message


def test_extra_file_and_tampered_artifact(packaged, tmp_path):
    folder = copy(packaged, tmp_path)
    (folder / "model" / "notes.txt").write_text("hi")
    assert "files-invalid" in codes(folder)
    (folder / "model" / "notes.txt").unlink()
    artifact = next((folder / "model").iterdir())
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    assert "hash-mismatch" in codes(folder)
