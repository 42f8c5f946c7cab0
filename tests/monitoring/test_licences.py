"""The monitoring core depends only on permissively licensed libraries: every third-party
package its modules import (directly) is read from the installed metadata and checked."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import metadata, packages_distributions
from pathlib import Path

import shipyard.monitoring

PERMISSIVE = ("Apache", "BSD", "MIT", "0BSD", "Zlib", "CC0", "PSF", "ISC")
FORBIDDEN = ("Business Source", "BUSL", "Elastic", "SSPL", "GPL", "AGPL")


def third_party_imports() -> set[str]:
    folder = Path(shipyard.monitoring.__file__).parent
    found: set[str] = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "shipyard" and top not in sys.stdlib_module_names and top != "__future__":
                    found.add(top)
    return found


def licence_of(distribution: str) -> str:
    meta = metadata(distribution)
    classifiers = " ".join(c for c in meta.get_all("Classifier") or [] if c.startswith("License"))
    # The first line of a free-text License field names it; the rest is often the full text,
    # which can quote other licences of bundled parts.
    first = (meta.get("License") or "").strip().splitlines()[:1]
    return f"{meta.get('License-Expression') or ''} {' '.join(first)} {classifiers}"


def test_monitoring_imports_only_permissive_libraries():
    imports = third_party_imports()
    assert {"prometheus_client", "datasketches", "numpy"} <= imports  # the scan sees them
    owners = packages_distributions()
    for module in sorted(imports):
        for distribution in owners[module]:
            text = licence_of(distribution)
            assert any(word in text for word in PERMISSIVE), (module, text[:200])
            assert not any(word in text for word in FORBIDDEN), (module, text[:200])
