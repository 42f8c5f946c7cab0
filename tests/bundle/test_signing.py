from __future__ import annotations

import json
from pathlib import Path

import pytest

from shipyard.bundle import signing
from shipyard.errors import ConfigError, IntegrityError


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    signing.generate_keypair(private, public)
    return private, public


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    root.mkdir()
    (root / "shipyard.yaml").write_text("name: m\nversion: '1'\nruntime: {kind: python}\n")
    return root


def test_private_key_is_owner_only(keys):
    private, _ = keys
    assert private.stat().st_mode & 0o077 == 0


def test_sign_then_verify(keys, folder):
    private, public = keys
    fingerprint = signing.sign(folder, private)
    assert signing.verify(folder, [public]) == fingerprint


def test_modified_manifest_fails_verification(keys, folder):
    private, public = keys
    signing.sign(folder, private)
    (folder / "shipyard.yaml").write_text("name: m\nversion: '2'\nruntime: {kind: python}\n")
    with pytest.raises(IntegrityError, match="does not match any trusted key"):
        signing.verify(folder, [public])


def test_unknown_key_and_unsigned_and_malformed(keys, folder, tmp_path):
    private, _ = keys
    other_private, other_public = tmp_path / "o.pem", tmp_path / "o.pub.pem"
    signing.generate_keypair(other_private, other_public)
    with pytest.raises(IntegrityError, match="not signed"):
        signing.verify(folder, [other_public])
    signing.sign(folder, private)
    with pytest.raises(IntegrityError, match="trusted key"):
        signing.verify(folder, [other_public])
    (folder / "shipyard.sig").write_text(json.dumps({"signature": "!!notbase64"}))
    with pytest.raises(IntegrityError, match="malformed"):
        signing.verify(folder, [other_public])


def test_bad_key_files_are_config_errors(folder, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(ConfigError, match="keygen"):
        signing.sign(folder, junk)
    with pytest.raises(ConfigError):
        signing.load_public(junk)
