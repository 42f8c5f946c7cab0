"""Files inside a bundle: safe paths, streaming hashes, verification.

Every path a manifest names is resolved and checked to stay under the bundle root before any
file is opened (MLflow CVE-2023-1177, Ollama CVE-2024-37032): `..`, absolute paths and
symlinks that point outside are refused.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from shipyard.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, FileEntry, Manifest
from shipyard.errors import BundleError, IntegrityError

CHUNK = 1 << 20
IGNORED = {MANIFEST_NAME, SIGNATURE_NAME}
IGNORED_PARTS = {"__pycache__", ".ipynb_checkpoints", ".DS_Store"}


def resolve_inside(root: Path, relative: str) -> Path:
    """Return `root/relative`, refusing anything that escapes `root` (also via symlinks)."""
    root_real = Path(os.path.realpath(root))
    if not relative or os.path.isabs(relative) or relative.startswith(("\\", "/")):
        raise BundleError(
            f"Got path {relative!r}. Expected a relative path inside the bundle.",
            hint="List files relative to the bundle root, e.g. 'model/model.pkl'.",
            file=relative,
        )
    candidate = root_real / relative
    real = Path(os.path.realpath(candidate))
    if real != root_real and root_real not in real.parents:
        raise BundleError(
            f"Path {relative!r} resolves outside the bundle ({real}).",
            hint="Copy the file into the bundle instead of linking or using '..'.",
            file=relative,
        )
    return real


def sha256_file(path: Path) -> tuple[str, int]:
    """Stream a file through sha256; return (hex digest, size)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def entry_for(root: Path, relative: str) -> FileEntry:
    path = resolve_inside(root, relative)
    digest, size = sha256_file(path)
    return FileEntry(path=relative, sha256=digest, size=size)


def walk(root: Path, under: str = "") -> Iterator[str]:
    """Relative paths of regular files under `root/under`, sorted; refuses escaping symlinks."""
    base = root / under if under else root
    if not base.exists():
        return
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_PARTS)
        for dirname in list(dirnames):
            full = Path(dirpath) / dirname
            if full.is_symlink():
                resolve_inside(root, full.relative_to(root).as_posix())
        for filename in sorted(filenames):
            if filename in IGNORED_PARTS or filename.endswith(".pyc"):
                continue
            rel = (Path(dirpath) / filename).relative_to(root).as_posix()
            if rel in IGNORED:
                continue
            resolve_inside(root, rel)
            yield rel


class Listed(Protocol):
    """A file as a manifest (or a registry record) lists it."""

    @property
    def path(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def size(self) -> int: ...


def verify(root: Path, manifest: Manifest) -> None:
    """Check every declared file exists with its sha256 and no undeclared file is present."""
    check_listed(root, manifest.all_files(), hashes=True)


def check_listed(root: Path, entries: Sequence[Listed], *, hashes: bool) -> None:
    """Every listed file present, inside the bundle, of its size (and sha256 when `hashes`);
    no file that is not listed. Without `hashes` the caller must hash while it copies."""
    for entry in entries:
        path = resolve_inside(root, entry.path)
        if not path.is_file():
            raise BundleError(
                f"File {entry.path!r} is listed in {MANIFEST_NAME} but missing.",
                hint="Restore the file, or re-run `shipyard package` to rebuild the list.",
                file=entry.path,
            )
        if hashes:
            digest, size = sha256_file(path)
        else:
            digest, size = entry.sha256, path.stat().st_size
        if digest != entry.sha256 or size != entry.size:
            raise IntegrityError(
                f"File {entry.path!r} does not match its sha256 in {MANIFEST_NAME} "
                f"(expected {entry.sha256[:12]}… of {entry.size} bytes, found {digest[:12]}… "
                f"of {size} bytes).",
                hint="The bundle was modified after packaging. Re-package it from a trusted "
                "source; never load a tampered artifact.",
                file=entry.path,
            )
    declared = {entry.path for entry in entries}
    extra = [rel for rel in walk(root) if rel not in declared]
    if extra:
        raise BundleError(
            f"Files not listed in {MANIFEST_NAME}: {', '.join(extra[:5])}.",
            hint="Remove them, or run `shipyard package FOLDER` to add them to the manifest.",
            file=extra[0],
        )
