from __future__ import annotations

import os
from pathlib import Path

import pytest

from shipyard.bundle import files
from shipyard.bundle.manifest import Manifest, RuntimeSpec
from shipyard.errors import BundleError, IntegrityError


def bundle(tmp_path: Path) -> tuple[Path, Manifest]:
    root = tmp_path / "b"
    (root / "model").mkdir(parents=True)
    (root / "model" / "w.bin").write_bytes(b"weights")
    manifest = Manifest(
        name="m",
        version="1",
        runtime=RuntimeSpec(kind="python"),
        artifacts=[files.entry_for(root, "model/w.bin")],
    )
    (root / "shipyard.yaml").write_text(manifest.to_yaml())
    return root, manifest


def test_verify_accepts_intact_bundle(tmp_path):
    root, manifest = bundle(tmp_path)
    files.verify(root, manifest)


def test_tampered_file_is_refused(tmp_path):
    root, manifest = bundle(tmp_path)
    (root / "model" / "w.bin").write_bytes(b"weightz")
    with pytest.raises(IntegrityError, match="model/w.bin") as info:
        files.verify(root, manifest)
    assert "tampered" in info.value.hint


def test_missing_and_extra_files_are_named(tmp_path):
    root, manifest = bundle(tmp_path)
    (root / "model" / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match="model/extra.bin"):
        files.verify(root, manifest)
    (root / "model" / "extra.bin").unlink()
    (root / "model" / "w.bin").unlink()
    with pytest.raises(BundleError, match="missing"):
        files.verify(root, manifest)


@pytest.mark.parametrize("bad", ["../outside", "/etc/passwd", "a/../../x", ""])
def test_resolve_inside_refuses_escapes(tmp_path, bad):
    with pytest.raises(BundleError):
        files.resolve_inside(tmp_path, bad)


def test_symlink_pointing_outside_is_refused(tmp_path):
    root, _ = bundle(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    os.symlink(secret, root / "model" / "link.txt")
    with pytest.raises(BundleError, match="outside the bundle"):
        list(files.walk(root))
    os.symlink(tmp_path, root / "model" / "dirlink")
    (root / "model" / "link.txt").unlink()
    with pytest.raises(BundleError, match="outside the bundle"):
        list(files.walk(root))


def test_symlink_inside_is_allowed(tmp_path):
    root, _ = bundle(tmp_path)
    os.symlink(root / "model" / "w.bin", root / "model" / "alias.bin")
    assert files.resolve_inside(root, "model/alias.bin") == (root / "model" / "w.bin").resolve()


def test_sha256_streams_large_file(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"\0" * (3 * files.CHUNK + 5))
    digest, size = files.sha256_file(path)
    assert size == 3 * files.CHUNK + 5
    assert len(digest) == 64
