"""Import a bundle's own Python code (`code/*.py`) by `module:attribute` entry point.

Modules are imported from the bundle's file path under a name unique to the bundle folder,
so two versions of the same bundle can be loaded side by side in one process (a champion and
its challenger) without one shadowing the other's code, and `sys.path` is never touched.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from shipyard.bundle.files import resolve_inside
from shipyard.errors import BundleError, ManifestError

ENTRY = re.compile(
    r"^(?P<module>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*):"
    r"(?P<attr>[A-Za-z_][A-Za-z0-9_]*)$"
)


def _module(folder: Path, module: str) -> ModuleType:
    relative = "code/" + module.replace(".", "/") + ".py"
    path = resolve_inside(folder, relative)
    if not path.is_file():
        raise BundleError(
            f"Code file {relative!r} does not exist.",
            hint="Put the module under the bundle's code/ folder.",
            file=relative,
        )
    tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    unique = f"shipyard_bundle_{tag}.{module}"
    if unique in sys.modules:
        return sys.modules[unique]
    parent = f"shipyard_bundle_{tag}"
    if parent not in sys.modules:
        package = ModuleType(parent)
        package.__path__ = [str(folder / "code")]
        sys.modules[parent] = package
    spec = importlib.util.spec_from_file_location(unique, path)
    if spec is None or spec.loader is None:
        raise BundleError(
            f"Cannot import {relative!r}.", hint="Check the file is Python.", file=relative
        )
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[unique] = loaded
    try:
        spec.loader.exec_module(loaded)
    except Exception as exc:
        sys.modules.pop(unique, None)
        raise BundleError(
            f"Importing {relative!r} failed: {type(exc).__name__}: {exc}.",
            hint="Fix the bundle's code; run it locally with python first.",
            file=relative,
        ) from exc
    return loaded


def import_entry(folder: Path, entry: str) -> Any:
    """Return the attribute named by `module:attribute` from the bundle's code folder."""
    match = ENTRY.match(entry or "")
    if not match:
        raise ManifestError(
            f"Got entry point {entry!r}. Expected 'module:attribute'.",
            hint="For code/process.py with def preprocess, write 'process:preprocess'.",
            field="code",
        )
    module = _module(folder, match["module"])
    try:
        return getattr(module, match["attr"])
    except AttributeError:
        raise BundleError(
            f"code/{match['module']}.py has no {match['attr']!r}.",
            hint="Check the spelling of the entry point in shipyard.yaml.",
            file=f"code/{match['module']}.py",
        ) from None
