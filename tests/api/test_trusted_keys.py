"""With trusted keys configured, every load path requires a valid manifest signature."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import shipyard
from shipyard.bundle import signing
from shipyard.errors import IntegrityError


def test_loads_require_a_trusted_signature(tmp_path: Path, packaged: Path):
    bundle = tmp_path / "b"
    shutil.copytree(packaged, bundle)
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    signing.generate_keypair(private, public)
    settings = shipyard.Settings.load({"home": tmp_path / "home", "trusted_keys": [public]},
                                      environ={})
    with pytest.raises(IntegrityError, match="not signed"):
        shipyard.load(bundle, settings=settings)
    signing.sign(bundle, private)
    assert shipyard.load(bundle, settings=settings).version == "1.0.0"
    shipyard.push(bundle, settings=settings)
    assert shipyard.load("tumours:1.0.0", settings=settings).version == "1.0.0"
    assert "unsigned" not in {f.code for f in shipyard.check(bundle)}

    manifest = bundle / "shipyard.yaml"
    manifest.write_text(manifest.read_text().replace("Tumour classifier.", "Tampered."))
    with pytest.raises(IntegrityError, match="trusted key"):
        shipyard.load(bundle, settings=settings)
