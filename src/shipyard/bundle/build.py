"""Writing bundles: atomic staging, file lists, pinned dependencies, scaffolding.

A bundle is built in a hidden sibling folder and renamed into place only when complete, so a
crash at any point leaves either the old state or nothing: never a half-written bundle.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import os
import platform
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from shipyard.bundle.files import entry_for, walk
from shipyard.bundle.manifest import MANIFEST_NAME, Dependencies, FileEntry, Manifest
from shipyard.errors import BundleError

TEMPLATES = Path(__file__).with_name("templates")


@contextlib.contextmanager
def staging(dest: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder that becomes `dest` atomically when the block succeeds."""
    dest = Path(dest).absolute()
    if dest.exists() and not overwrite and (dest.is_file() or any(dest.iterdir())):
        raise BundleError(
            f"{dest} already exists and is not empty.",
            hint="Choose a new folder, or pass overwrite=True.",
            file=str(dest),
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    # Data must be on disk before the rename publishes it, or a power cut could expose
    # a complete-looking bundle with empty files.
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def write_manifest(folder: Path, manifest: Manifest) -> None:
    target = Path(folder) / MANIFEST_NAME
    tmp = target.with_name(f".{MANIFEST_NAME}.tmp")
    tmp.write_text(manifest.to_yaml(), encoding="utf-8")
    os.replace(tmp, target)


def file_entries(folder: Path, relatives: Iterable[str]) -> list[FileEntry]:
    return [entry_for(folder, rel) for rel in sorted(set(relatives))]


def list_files(folder: Path, under: str) -> list[str]:
    return list(walk(folder, under))


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def distributions_for_modules(modules: Iterable[str]) -> set[str]:
    """Map top-level module names (e.g. 'sklearn') to installed distributions."""
    mapping = metadata.packages_distributions()
    found: set[str] = set()
    for module in modules:
        top = module.split(".")[0]
        found.update(mapping.get(top, []))
    return found


def pinned_dependencies(distributions: Iterable[str]) -> Dependencies:
    """Exact versions of the given distributions in the running environment."""
    packages = {}
    for name in sorted(set(distributions), key=str.lower):
        version = installed_version(name)
        if version is not None:
            packages[name.lower()] = f"=={version}"
    return Dependencies(python=platform.python_version(), packages=packages)


def scaffold(dest: Path, *, name: str, owner: str) -> Path:
    """Write a bundle folder with custom loading, preprocessing and postprocessing code."""
    with staging(dest) as tmp:
        (tmp / "code").mkdir()
        (tmp / "model").mkdir()
        for template in sorted(TEMPLATES.iterdir()):
            name_out = template.name.removesuffix(".template")
            text = template.read_text().replace("{{name}}", name).replace("{{owner}}", owner)
            folder = {".py": "code", ".json": "model"}.get(Path(name_out).suffix, "")
            (tmp / folder / name_out).write_text(text)
    return Path(dest)
