"""Moving bundle files between a folder and the artifact store.

`read_bundle` checks everything about a bundle that needs no hashing (manifest, names, paths,
the file set, sizes) before anything is written. `upload` then reads each file once: it is
hashed while it is copied into the content-addressed store, checked against its sha256 in
the manifest, and the new blobs are published only when every file matched (a blob already
stored is not copied again, but the file is still hashed and checked). So a push hashes each
byte once, and a bundle that fails any check leaves nothing behind.

Downloads build the whole bundle in a temporary folder beside the destination, hashing each
file as it is written, and rename the folder into place only when every file has been written
and verified, so a reader sees a complete bundle or none.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shipyard.bundle.files import check_listed, resolve_inside
from shipyard.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest, text_has_digest
from shipyard.errors import BundleError, IntegrityError, UserError
from shipyard.registry.records import FileRecord, VersionRecord
from shipyard.registry.refs import check_name, check_version
from shipyard.registry.store import Store, Upload, check_digest

Progress = Callable[[int, int], None]
MAX_SIGNATURE = 64 * 1024
MAX_PATH = 1024


@dataclass(frozen=True, slots=True)
class LocalBundle:
    """A bundle folder that passed every check a push makes before copying its files."""

    root: Path
    manifest: Manifest
    manifest_yaml: str
    entries: list[FileRecord]
    signature: bytes | None


def read_bundle(root: Path) -> LocalBundle:
    """Read and check the bundle at `root`: manifest, names, paths, file set and sizes.

    Each file's sha256 is checked by `upload`, while the file is copied into the store.
    """
    manifest = Manifest.read(root)
    # The manifest checks these too; checked again because they become keys and paths.
    check_name(manifest.name, what="model name")
    check_version(manifest.version)
    entries = [FileRecord(e.path, e.sha256, e.size) for e in manifest.all_files()]
    for entry in entries:
        if len(entry.path) > MAX_PATH:
            raise BundleError(
                f"Got a path of {len(entry.path)} characters ({entry.path[:40]!r}…). "
                f"Expected at most {MAX_PATH}.",
                hint="Shorten the file's path inside the bundle and package again.",
            )
        check_digest(entry.sha256)
    # Everything but the sha256, which the store computes while copying: one read per file.
    check_listed(root, entries, hashes=False)
    # Read as bytes and decoded as is: text mode would rewrite CRLF and break a signature.
    text = (root / MANIFEST_NAME).read_bytes().decode("utf-8")
    if Manifest.from_text(text).digest() != manifest.digest():
        raise BundleError(
            f"{MANIFEST_NAME} in {root} changed while it was being pushed.",
            hint="Leave the bundle untouched during a push, then push again.",
        )
    return LocalBundle(root, manifest, text, entries, _read_signature(root))


def _read_signature(root: Path) -> bytes | None:
    if not (root / SIGNATURE_NAME).is_file():
        return None
    path = resolve_inside(root, SIGNATURE_NAME)
    size = path.stat().st_size
    if size > MAX_SIGNATURE:
        raise BundleError(
            f"Got a {SIGNATURE_NAME} of {size} bytes. Expected at most {MAX_SIGNATURE}.",
            hint="Sign the bundle again with `shipyard sign`.",
        )
    return path.read_bytes()


class _Meter:
    """Turns per-chunk byte counts into (done, total) progress calls."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def __call__(self, count: int) -> None:
        self.done += count
        if self.progress:
            self.progress(self.done, self.total)


def upload(
    store: Store, root: Path, entries: Sequence[FileRecord], progress: Progress | None = None
) -> int:
    """Store every file of a checked bundle, all or nothing; return how many blobs were new.

    Each file is hashed while it is copied and must match its sha256 in the manifest; the new
    blobs are published only once every file has matched (see `Store.put_all`).
    """
    meter = _Meter(sum(entry.size for entry in entries), progress)
    uploads = [
        Upload(resolve_inside(root, entry.path), entry.sha256, entry.size, entry.path)
        for entry in entries
    ]
    return store.put_all(uploads, meter)


def download(
    store: Store, record: VersionRecord, dest: Path, progress: Progress | None = None
) -> Path:
    """Write the bundle of `record` to `dest` (new or empty) atomically; return `dest`."""
    dest = Path(dest).expanduser().absolute()
    _refuse_occupied(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A plain mkdir (not mkdtemp's 0700) so the bundle gets the user's usual permissions.
    temp = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex}"
    temp.mkdir()
    try:
        _write_bundle(store, record, temp, progress)
        try:
            # rename(2) replaces an empty folder and refuses a non-empty one, atomically.
            os.rename(temp, dest)
        except OSError as exc:
            raise _occupied(dest) from exc
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return dest


def cached(
    store: Store, record: VersionRecord, cache_dir: Path, progress: Progress | None = None
) -> Path:
    """A verified local copy of `record` under `cache_dir/<manifest digest>`, reused if sound."""
    folder = Path(cache_dir) / check_digest(record.digest)
    if is_intact(folder, record):
        return folder
    if folder.exists():
        # Damaged or foreign content: move it aside first so the rename below can succeed.
        aside = folder.with_name(f".{folder.name}.stale-{os.getpid()}")
        with contextlib.suppress(OSError):
            os.rename(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)
    try:
        return download(store, record, folder, progress)
    except UserError:
        # Another process finished the same fetch between our check and our rename.
        if is_intact(folder, record):
            return folder
        raise


def is_intact(folder: Path, record: VersionRecord) -> bool:
    """Cheap check of a cached copy: manifest digest, file set and sizes (hashes at pull)."""
    try:
        text = (folder / MANIFEST_NAME).read_text(encoding="utf-8")
        if not text_has_digest(text, record.digest):
            return False
        for entry in record.files:
            if resolve_inside(folder, entry.path).stat().st_size != entry.size:
                return False
        if record.signature is not None:
            return (folder / SIGNATURE_NAME).read_bytes() == record.signature
    except (OSError, ValueError, UserError):
        return False
    return True


def _write_bundle(
    store: Store, record: VersionRecord, root: Path, progress: Progress | None
) -> None:
    manifest = record.manifest()
    if manifest.digest() != record.digest:
        raise IntegrityError(
            f"The stored manifest of {record.ref} does not match its digest {record.digest[:12]}….",
            hint="The registry database was changed outside shipyard; push the bundle again.",
        )
    meter = _Meter(record.size, progress)
    for entry in record.files:
        target = resolve_inside(root, entry.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        store.get(entry.sha256, entry.size, target, meter)
    # Bytes, not text mode: the signature covers the exact bytes, line endings included.
    (root / MANIFEST_NAME).write_bytes(record.manifest_yaml.encode("utf-8"))
    if record.signature is not None:
        (root / SIGNATURE_NAME).write_bytes(record.signature)


def _refuse_occupied(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise _occupied(dest)


def _occupied(dest: Path) -> UserError:
    return UserError(
        f"Got {str(dest)!r} for the destination, but it already exists and is not an empty "
        "folder. Expected a new or empty folder.",
        hint="Pick another destination, or remove the folder first.",
        path=str(dest),
    )
