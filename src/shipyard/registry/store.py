"""The artifact store: files kept by their sha256, in a local folder or behind any fsspec URL.

A blob lives at `sha256/<first two hex>/<digest>`. Every digest is checked against
`^[0-9a-f]{64}$` before it becomes part of a path (Ollama "Probllama", CVE-2024-37032).
Bytes are streamed and hashed on the way in and on the way out, so a file that does not match
its digest, or a blob damaged at rest, is refused rather than stored or served. The digest is
always computed over exactly the bytes written, never over a separate read of the source.
A blob appears under its final key only once complete and verified: written to a temporary
key, then renamed. `put_all` publishes a set of files all or nothing.

Blobs are not fsynced (neither is the plain copy they are measured against): after a power
loss a recent blob can come back short or empty. That can never be served as good content:
every read is verified, a damaged blob is removed when found, and pushing again repairs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import re
import tempfile
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shipyard.errors import BundleError, ConfigError, IntegrityError, NotFoundError
from shipyard.security.urls import check_outbound

CHUNK = 1 << 20
# Buffers in flight in a threaded copy: memory stays at BUFFERS * CHUNK whatever the size.
BUFFERS = 4
# Files up to this size are copied on one thread: starting a hashing thread would cost more
# than it saves.
THREADED_ABOVE = 2 * CHUNK
# Writes go out in 64 KiB slices, the size the kernel's own file copy uses. Whole 1 MiB writes
# let the page cache allocate large folios, which measured up to twice as slow on a virtual
# machine once other large files were cached (bench/push_pull.md); 16 syscalls per MiB cost
# nothing that shows.
WRITE_SLICE = 64 << 10
DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")

Progress = Callable[[int], None]


def check_digest(digest: str) -> str:
    """Return `digest` if it is 64 lowercase hex characters; refuse anything else."""
    if isinstance(digest, str) and DIGEST_PATTERN.fullmatch(digest):
        return digest
    shown = repr(digest[:80]) if isinstance(digest, str) else type(digest).__name__
    raise BundleError(
        f"Got {shown} for a sha256 digest. Expected 64 lowercase hex characters.",
        hint="Digests come from shipyard.yaml; re-package the bundle with `shipyard package`.",
    )


def blob_key(digest: str) -> str:
    digest = check_digest(digest)
    return f"sha256/{digest[:2]}/{digest}"


@dataclass(frozen=True, slots=True)
class Upload:
    """One file to store: where it is, what it must hash to, and its name in messages."""

    source: Path
    digest: str
    size: int
    name: str


class Store(ABC):
    """Content-addressed blobs; subclasses supply six small storage operations."""

    url: str

    def has(self, digest: str, size: int) -> bool:
        """Whether a complete blob of `size` bytes is stored under `digest`."""
        return self._size(blob_key(digest)) == size

    def put(self, source: Path, digest: str, size: int, progress: Progress | None = None) -> bool:
        """Store the file at `source` under `digest`; False when it was already there."""
        return self.put_all([Upload(Path(source), digest, size, Path(source).name)], progress) > 0

    def put_all(self, uploads: Sequence[Upload], progress: Progress | None = None) -> int:
        """Store every file, all or nothing; return how many blobs were new.

        Each file is hashed as it is copied into a temporary blob. Only when every file has
        matched its digest and size are the new blobs published under their final keys; on
        any mismatch or error the temporary blobs are discarded and nothing appears. A file
        whose blob is already stored is not copied, but it is still read and checked, so a
        call never succeeds for a file that does not match its digest.
        """
        keys = [blob_key(upload.digest) for upload in uploads]  # refuse bad digests first
        staged: dict[str, str] = {}
        try:
            for upload, key in zip(uploads, keys, strict=True):
                if key in staged or self._size(key) == upload.size:
                    _check_source(upload, None, progress)
                    continue
                handle, temp = self._open_temp()
                staged[key] = temp
                _check_source(upload, handle, progress)
            for key, temp in staged.items():
                self._publish(temp, key)
        except BaseException:
            for temp in staged.values():
                self._discard(temp)  # a no-op for those already published
            raise
        return len(staged)

    def get(self, digest: str, size: int, dest: Path, progress: Progress | None = None) -> None:
        """Write the blob to the new file `dest`, verifying its sha256 on the way out.

        When the blob does not match, `dest` is removed again and IntegrityError raised.
        """
        key = blob_key(digest)
        try:
            reader = self._open_read(key)
        except FileNotFoundError:
            raise NotFoundError(
                f"Blob {digest[:12]}… is missing from the artifact store {self.url}.",
                hint="The store was changed outside shipyard; push the bundle again.",
                digest=digest,
            ) from None
        with reader:
            writer = open(dest, "xb")  # noqa: SIM115 - closed below; an existing file stays
            try:
                with writer:
                    found, written = _copy(reader, writer, progress, threaded=size > THREADED_ABOVE)
            except BaseException:
                Path(dest).unlink(missing_ok=True)
                raise
        if found != digest or written != size:
            Path(dest).unlink(missing_ok=True)
            # Content that does not match its name is garbage by definition. Removing it lets
            # the next push of the same file store a good copy instead of skipping it.
            self._remove(key)
            raise IntegrityError(
                f"Blob {digest[:12]}… in the artifact store {self.url} is damaged "
                f"(found sha256 {found[:12]}…, {written} of {size} bytes).",
                hint="Never load it. Push the bundle again from a trusted copy to repair it.",
                digest=digest,
            )

    @abstractmethod
    def _size(self, key: str) -> int | None:
        """Size of the blob at `key`, or None when absent."""

    @abstractmethod
    def _open_read(self, key: str) -> IO[bytes]:
        """Open `key` for streaming reads; FileNotFoundError when absent."""

    @abstractmethod
    def _open_temp(self) -> tuple[IO[bytes], str]:
        """A new temporary blob, open for writing, and its key."""

    @abstractmethod
    def _publish(self, temp: str, key: str) -> None:
        """Move the complete temporary blob to its final key."""

    @abstractmethod
    def _discard(self, temp: str) -> None:
        """Remove a temporary blob, if it exists."""

    @abstractmethod
    def _remove(self, key: str) -> None:
        """Remove the blob at `key`, if it exists."""


class LocalStore(Store):
    """Blobs in a folder on this machine; publishing is an atomic `os.replace`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()
        self.url = str(self.root)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key

    def _size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def _open_read(self, key: str) -> IO[bytes]:
        return open(self._path(key), "rb")

    def _open_temp(self) -> tuple[IO[bytes], str]:
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", prefix="blob-")
        return os.fdopen(fd, "wb"), name

    def _publish(self, temp: str, key: str) -> None:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        # Same content under the same name: a concurrent writer winning the race is harmless.
        os.replace(temp, final)

    def _discard(self, temp: str) -> None:
        Path(temp).unlink(missing_ok=True)

    def _remove(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class FsspecStore(Store):
    """Blobs behind an fsspec URL (s3://, gs://, memory://, file://, ...)."""

    def __init__(self, url: str) -> None:
        from fsspec.core import url_to_fs

        self.url = url
        self.fs: Any
        scheme = url.split("://", 1)[0]
        try:
            self.fs, root = url_to_fs(url)
        except (ImportError, ValueError) as exc:
            # Only the scheme is echoed: a store URL can carry credentials.
            raise ConfigError(
                f"Got an artifact store URL with scheme {scheme!r} that fsspec cannot open "
                f"({type(exc).__name__}). Expected a local folder or an fsspec URL such as "
                "s3://bucket/shipyard.",
                hint="Fix store_url (SHIPYARD_STORE_URL), or install the fsspec backend for "
                "it, e.g. pip install s3fs.",
            ) from None
        self.root = str(root).rstrip("/")

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _size(self, key: str) -> int | None:
        try:
            return int(self.fs.size(self._path(key)))
        except FileNotFoundError:
            return None

    def _open_read(self, key: str) -> IO[bytes]:
        return self.fs.open(self._path(key), "rb", block_size=CHUNK)

    def _open_temp(self) -> tuple[IO[bytes], str]:
        temp = self._path(f"tmp/blob-{uuid.uuid4().hex}")
        self.fs.makedirs(temp.rsplit("/", 1)[0], exist_ok=True)
        return self.fs.open(temp, "wb", block_size=CHUNK), temp

    def _publish(self, temp: str, key: str) -> None:
        final = self._path(key)
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        # A rename where the backend has one (local, memory); object stores copy then delete,
        # and their single-object writes are atomic anyway.
        self.fs.mv(temp, final)

    def _discard(self, temp: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(temp)

    def _remove(self, key: str) -> None:
        self._discard(self._path(key))


SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def open_store(url: str) -> Store:
    """A local folder for a plain path; fsspec for anything with a `scheme://`."""
    if "://" in url:
        check_outbound(url, "artifact store")
        return FsspecStore(url)
    if SCHEME.match(url) and not WINDOWS_DRIVE.match(url):
        # `file:/srv/x` or `s3:bucket` would silently become a folder named `file:` here.
        raise ConfigError(
            "The artifact store URL has a scheme but no `//`.",
            hint="Write scheme://host/path (e.g. s3://bucket/prefix), or a plain folder path.",
        )
    return LocalStore(Path(url))


def _check_source(upload: Upload, writer: IO[bytes] | None, progress: Progress | None) -> None:
    """Hash `upload.source` (copying it into `writer` when given); refuse a mismatch."""
    threaded = upload.size > THREADED_ABOVE
    if writer is None:
        with open(upload.source, "rb") as reader:
            found, size = _copy(reader, None, progress, threaded=threaded)
    else:
        with writer, open(upload.source, "rb") as reader:
            found, size = _copy(reader, writer, progress, threaded=threaded)
    if found != upload.digest or size != upload.size:
        raise IntegrityError(
            f"File {upload.name!r} does not match its sha256 (expected {upload.digest[:12]}… "
            f"and {upload.size} bytes, found {found[:12]}… and {size} bytes): it changed "
            "after packaging or while it was being stored.",
            hint="Re-package the bundle from a trusted source and leave it untouched during "
            "a push; never load a tampered artifact.",
            file=upload.name,
        )


def _copy(
    reader: IO[bytes], writer: IO[bytes] | None, progress: Progress | None, *, threaded: bool
) -> tuple[str, int]:
    """Stream `reader` into `writer` (or nowhere); return (sha256 hex, bytes copied).

    The digest covers exactly the bytes handed to `writer`: both come from the same buffer,
    and a buffer is refilled only once it has been both hashed and written.
    """
    if threaded:
        return _copy_threaded(reader, writer, progress)
    digest = hashlib.sha256()
    total = 0
    buffer = bytearray(CHUNK)
    while count := _read_into(reader, buffer):
        view = memoryview(buffer)[:count]
        digest.update(view)
        if writer is not None:
            _write_all(writer, view)
        total += count
        if progress:
            progress(count)
    return digest.hexdigest(), total


def _copy_threaded(
    reader: IO[bytes], writer: IO[bytes] | None, progress: Progress | None
) -> tuple[str, int]:
    """`_copy` with sha256 on a second thread, so hashing overlaps reading and writing.

    hashlib releases the GIL while it hashes a large buffer, as file reads and writes do, so
    on two cores a transfer takes about as long as hashing alone rather than hashing plus
    copying (bench/push_pull.py). This thread reads and writes; the helper hashes the same
    buffers in order and hands each back through `free`. Memory: BUFFERS * CHUNK.
    """
    digest = hashlib.sha256()
    todo: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    for _ in range(BUFFERS):
        free.put(bytearray(CHUNK))
    failures: list[BaseException] = []

    def hash_all() -> None:
        while (item := todo.get()) is not None:
            buffer, count = item
            if not failures:
                try:
                    digest.update(memoryview(buffer)[:count])
                except BaseException as exc:  # noqa: BLE001 - raised again on the caller's thread
                    failures.append(exc)  # pragma: no cover - hashlib does not fail
            free.put(buffer)  # always handed back, so the reader can never wait forever

    hasher = threading.Thread(target=hash_all, name="shipyard-sha256", daemon=True)
    hasher.start()
    total = 0
    try:
        while True:
            buffer = free.get()
            count = _read_into(reader, buffer)
            if not count:
                break
            todo.put((buffer, count))
            if writer is not None:
                _write_all(writer, memoryview(buffer)[:count])
            total += count
            if progress:
                progress(count)
    finally:
        todo.put(None)
        hasher.join()
    if failures:  # pragma: no cover
        raise failures[0]
    return digest.hexdigest(), total


def _read_into(reader: IO[bytes], buffer: bytearray) -> int:
    readinto = getattr(reader, "readinto", None)
    if readinto is not None:
        return int(readinto(buffer) or 0)
    data = reader.read(len(buffer))
    buffer[: len(data)] = data
    return len(data)


def _write_all(writer: IO[bytes], view: memoryview) -> None:
    """Write all of `view`, in slices of WRITE_SLICE bytes."""
    for start in range(0, len(view), WRITE_SLICE):
        piece = view[start : start + WRITE_SLICE]
        # Buffered files write everything at once; a raw file may take less, so loop.
        while piece:
            written = writer.write(piece)
            if written is None or written >= len(piece):
                break
            piece = piece[written:]
