from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import shipyard

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "torch",
    "xgboost",
    "lightgbm",
    "onnxruntime",
    "sentence_transformers",
    "transformers",
    "sklearn",
    "pandas",
    "sqlalchemy",
)


def test_all_is_curated_and_resolves():
    assert sorted(shipyard.__all__) == sorted(
        [
            "Manifest",
            "Model",
            "Registry",
            "Settings",
            "ShipyardError",
            "__version__",
            "check",
            "finish",
            "init",
            "load",
            "package",
            "pull",
            "push",
        ]
    )
    for name in shipyard.__all__:
        assert getattr(shipyard, name) is not None


def test_import_shipyard_imports_no_framework():
    code = f"import sys, shipyard, shipyard.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_every_setting_is_documented():
    from shipyard.settings import Settings

    text = (ROOT / "docs" / "settings.md").read_text()
    for name, field in Settings.model_fields.items():
        assert f"`{name}`" in text, name
        assert field.description, name


def test_every_check_code_is_documented():
    from shipyard.bundle.check import CODES

    text = (ROOT / "docs" / "checks.md").read_text()
    for code, (severity, _) in CODES.items():
        assert re.search(rf"`{re.escape(code)}` \| {severity} \|", text), code


def test_every_command_is_documented():
    import click

    from shipyard.cli import cli

    text = (ROOT / "docs" / "cli.md").read_text()

    def walk(group: click.Group, prefix: str) -> list[str]:
        names = []
        for name, command in group.commands.items():
            names.append(f"{prefix} {name}")
            if isinstance(command, click.Group):
                names += walk(command, f"{prefix} {name}")
        return names

    for command in walk(cli, "shipyard"):
        assert f"`{command}" in text, command


def test_every_error_class_has_a_distinct_code():
    from shipyard import errors

    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.ShipyardError)
    ]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
    for klass in classes:
        assert 400 <= klass.status < 600
