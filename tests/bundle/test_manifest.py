from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.bundle.manifest import (
    Evaluation,
    FieldSpec,
    FileEntry,
    Manifest,
    Metric,
    Owner,
    RuntimeSpec,
    Schema,
    text_has_digest,
)
from shipyard.errors import ManifestError

names = st.from_regex(r"^[a-z0-9][a-z0-9._-]{0,20}$", fullmatch=True)
versions = st.from_regex(r"^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$", fullmatch=True)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)


def minimal(**extra: object) -> dict[str, object]:
    return {"name": "iris", "version": "1.0.0", "runtime": {"kind": "sklearn"}, **extra}


@settings(max_examples=60, deadline=None)
@given(
    name=names,
    version=versions,
    description=text,
    fields=st.lists(
        st.sampled_from(["float64", "int64", "string", "bool"]), min_size=1, max_size=4
    ),
    metric=st.floats(min_value=0, max_value=1),
)
def test_manifest_round_trips_through_yaml(name, version, description, fields, metric):
    manifest = Manifest(
        name=name,
        version=version,
        description=description,
        owner=Owner(name="Ana Lima", contact="ana@example.com"),
        runtime=RuntimeSpec(kind="sklearn", options={"format": "joblib"}),
        artifacts=[FileEntry(path="model/model.joblib", sha256="a" * 64, size=3)],
        schema=Schema(
            inputs=[FieldSpec(name=f"f{i}", dtype=d) for i, d in enumerate(fields)],
            outputs=[FieldSpec(name="label", dtype="int64")],
        ),
        evaluation=Evaluation(
            data="hold-out",
            rows=10,
            date=datetime.now(UTC),
            metrics=[Metric(name="accuracy", value=metric, threshold=0.5)],
        ),
        tags={"team": "ml"},
    )
    again = Manifest.from_text(manifest.to_yaml())
    assert again == manifest
    assert again.digest() == manifest.digest()


def test_digest_changes_with_content():
    a = Manifest.from_dict(minimal())
    b = Manifest.from_dict(minimal(description="x"))
    assert a.digest() != b.digest()


def test_text_has_digest_hashes_canonical_text_and_parses_anything_else():
    manifest = Manifest.from_dict(minimal(description="churn model"))
    canonical = manifest.to_yaml()
    assert text_has_digest(canonical, manifest.digest())
    # The same manifest written by hand (a comment, a quoted string): not the canonical bytes,
    # so it is parsed and dumped again, and still matches.
    by_hand = "# edited by hand\n" + canonical.replace("churn model", "'churn model'")
    assert by_hand != canonical
    assert text_has_digest(by_hand, manifest.digest())
    assert not text_has_digest(canonical.replace("churn", "chum"), manifest.digest())


def test_owner_parses_name_and_contact():
    owner = Owner.parse("Ana Lima <ana@example.com>")
    assert (owner.name, owner.contact) == ("Ana Lima", "ana@example.com")
    assert str(owner) == "Ana Lima <ana@example.com>"


@pytest.mark.parametrize("bad", ["", "Ana", "<ana@example.com>", "Ana <>", "Ana <a b>"])
def test_owner_rejects_malformed(bad):
    with pytest.raises(ManifestError, match="Name <contact>"):
        Owner.parse(bad)


def test_owner_string_accepted_in_yaml():
    manifest = Manifest.from_text(
        "name: m\nversion: '1'\nowner: Ana <ana@x.io>\nruntime: {kind: python}\n"
    )
    assert manifest.owner == Owner(name="Ana", contact="ana@x.io")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: [unclosed", "not valid YAML at line"),
        ("- a list\n- not a mapping", "Expected a mapping"),
        ("version: '1'\nruntime: {kind: python}", "name"),
        ("name: m\nversion: 1\nruntime: python", "runtime"),
        ("name: m\nversion: '1'\nruntime: {kind: python}\nbogus: 1", "bogus"),
        ("name: ../etc\nversion: '1'\nruntime: {kind: python}", "name"),
        ("name: Model!\nversion: '1'\nruntime: {kind: python}", "name"),
        ("name: m\nversion: '1/../../x'\nruntime: {kind: python}", "version"),
        ("name: m\nversion: '1'\nruntime: {kind: python}\nformat: 99", "format"),
        (
            "name: m\nversion: '1'\nruntime: {kind: python}\nartifacts: [{path: ../x, sha256: "
            + "a" * 64
            + ", size: 1}]",
            "artifacts.0.path",
        ),
        (
            "name: m\nversion: '1'\nruntime: {kind: python}\nartifacts: [{path: /etc/passwd, "
            "sha256: " + "a" * 64 + ", size: 1}]",
            "artifacts.0.path",
        ),
        (
            "name: m\nversion: '1'\nruntime: {kind: python}\nartifacts: [{path: x, sha256: "
            "nothex, size: 1}]",
            "sha256",
        ),
        (
            "name: m\nversion: '1'\nruntime: {kind: python}\nschema: {inputs: [{name: a, "
            "dtype: complex}]}",
            "dtype",
        ),
    ],
)
def test_malformed_manifests_name_the_problem(text, needle):
    with pytest.raises(ManifestError) as info:
        Manifest.from_text(text)
    assert needle in str(info.value)
    assert info.value.exit_code == 2
    assert info.value.hint


def test_read_reports_missing_and_non_utf8(tmp_path: Path):
    with pytest.raises(ManifestError, match="No shipyard.yaml"):
        Manifest.read(tmp_path)
    (tmp_path / "shipyard.yaml").write_bytes(b"name: \xff\xfe")
    with pytest.raises(ManifestError, match="UTF-8"):
        Manifest.read(tmp_path)


def test_metric_threshold_direction():
    assert Metric(name="accuracy", value=0.9, threshold=0.8).passes
    assert not Metric(name="accuracy", value=0.7, threshold=0.8).passes
    assert Metric(name="rmse", value=1.0, threshold=2.0, higher_is_better=False).passes
    assert not Metric(name="rmse", value=3.0, threshold=2.0, higher_is_better=False).passes
    assert Metric(name="x", value=0.1).passes
