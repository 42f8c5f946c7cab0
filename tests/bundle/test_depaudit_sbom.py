"""The CycloneDX 1.5 SBOM of a bundle: valid against the schema, purls, file hashes."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest

from shipyard.bundle.manifest import MANIFEST_NAME, Dependencies, Manifest
from shipyard.depaudit import audit_bundle, sbom_json, write_sbom
from shipyard.errors import BundleError

SERIAL = UUID("12345678-1234-5678-1234-567812345678")
NOW = datetime(2024, 6, 1, tzinfo=UTC)


@pytest.fixture
def bundle(make_bundle) -> Path:
    root = make_bundle(files={"code/pre.py": b"def f(x):\n    return x\n"}, description="Iris")
    manifest = Manifest.read(root)
    manifest.dependencies = Dependencies(
        python="3.11.7",
        packages={"Scikit_Learn": "==1.4.2", "numpy": "==1.26.4", "loose": ">=1"},
    )
    (root / MANIFEST_NAME).write_text(manifest.to_yaml(), encoding="utf-8")
    return root


def test_sbom_is_valid_cyclonedx_1_5(bundle):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    text = sbom_json(bundle, serial=SERIAL, now=NOW)
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(text) is None
    data = json.loads(text)
    assert (data["bomFormat"], data["specVersion"]) == ("CycloneDX", "1.5")
    assert data["serialNumber"] == f"urn:uuid:{SERIAL}"


def test_dependencies_carry_pypi_purls(bundle):
    data = json.loads(sbom_json(bundle, serial=SERIAL, now=NOW))
    purls = {c.get("purl") for c in data["components"] if c["type"] == "library"}
    assert purls == {"pkg:pypi/scikit-learn@1.4.2", "pkg:pypi/numpy@1.26.4", "pkg:pypi/loose"}
    subject = data["metadata"]["component"]
    assert (subject["type"], subject["name"], subject["version"]) == (
        "machine-learning-model",
        "iris",
        "1.0",
    )
    (edge,) = [d for d in data["dependencies"] if d["ref"] == subject["bom-ref"]]
    assert len(edge["dependsOn"]) == 3


def test_every_bundle_file_is_hashed_from_its_bytes(bundle):
    data = json.loads(sbom_json(bundle, serial=SERIAL, now=NOW))
    hashes = {
        c["name"]: c["hashes"][0]["content"] for c in data["components"] if c["type"] == "file"
    }
    assert set(hashes) == {MANIFEST_NAME, "model/weights.bin", "code/pre.py"}
    for name, digest in hashes.items():
        assert digest == hashlib.sha256((bundle / name).read_bytes()).hexdigest()


def test_same_inputs_give_the_same_sbom(bundle):
    assert sbom_json(bundle, serial=SERIAL, now=NOW) == sbom_json(bundle, serial=SERIAL, now=NOW)


def test_audit_writes_the_sbom_even_when_it_cannot_tell(bundle, tmp_path):
    dest = tmp_path / "out" / "sbom.json"
    report = audit_bundle(bundle, database=tmp_path / "missing.zip", sbom=dest)
    assert report.status == "unknown"
    assert json.loads(dest.read_text())["specVersion"] == "1.5"
    assert not list(dest.parent.glob(".sbom-*"))  # no temp file left behind


def test_write_sbom_replaces_atomically(bundle, tmp_path):
    dest = tmp_path / "sbom.json"
    dest.write_text("old")
    assert write_sbom(bundle, dest) == dest
    assert json.loads(dest.read_text())["bomFormat"] == "CycloneDX"


def test_a_listed_file_that_escapes_the_bundle_is_refused(bundle, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("s3cret")
    (bundle / "code" / "pre.py").unlink()
    (bundle / "code" / "pre.py").symlink_to(outside)
    with pytest.raises(BundleError):
        sbom_json(bundle)
