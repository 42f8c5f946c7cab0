"""The artifact store: files kept by their sha256, in a local folder or behind any fsspec URL.

A blob lives at `sha256/<first two hex>/<digest>`. Every digest is checked against
`^[0-9a-f]{64}$` before it becomes part of a path (Ollama "Probllama", CVE-2024-37032).
Bytes are streamed in 1 MiB chunks and hashed on the way in and on the way out, so a file that
changes during upload, or a blob damaged at rest, is refused rather than served. A blob
appears under its final key only once complete: written to a temporary key, then renamed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from shipyard.errors import BundleError, ConfigError, IntegrityError, NotFoundError

CHUNK = 1 << 20
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


class Store(ABC):
    """Content-addressed blobs; subclasses supply five small storage operations."""

    url: str

    def has(self, digest: str, size: int) -> bool:
        """Whether a complete blob of `size` bytes is stored under `digest`."""
        return self._size(blob_key(digest)) == size

    def put(self, source: Path, digest: str, size: int, progress: Progress | None = None) -> bool:
        """Store the file at `source` under `digest`; False when it was already there."""
        key = blob_key(digest)
        if self._size(key) == size:
            if progress:
                progress(size)
            return False
        handle, temp = self._open_temp()
        try:
            with handle, open(source, "rb") as reader:
                found, written = _copy(reader, handle, progress)
            if found != digest or written != size:
                raise IntegrityError(
                    f"File {source.name!r} changed while it was being stored "
                    f"(expected sha256 {digest[:12]}…, found {found[:12]}…).",
                    hint="Leave the bundle untouched during a push, then push again.",
                    file=str(source),
                )
            self._publish(temp, key)
        except BaseException:
            self._discard(temp)
            raise
        return True

    def get(self, digest: str, size: int, dest: Path, progress: Progress | None = None) -> None:
        """Write the blob to the new file `dest`, verifying its sha256 on the way out."""
        key = blob_key(digest)
        try:
            reader = self._open_read(key)
        except FileNotFoundError:
            raise NotFoundError(
                f"Blob {digest[:12]}… is missing from the artifact store {self.url}.",
                hint="The store was changed outside shipyard; push the bundle again.",
                digest=digest,
            ) from None
        with reader, open(dest, "xb") as writer:
            found, written = _copy(reader, writer, progress)
        if found != digest or written != size:
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


def open_store(url: str) -> Store:
    """A local folder for a plain path; fsspec for anything with a `scheme://`."""
    if "://" in url:
        return FsspecStore(url)
    return LocalStore(Path(url))


def _copy(reader: IO[bytes], writer: IO[bytes], progress: Progress | None) -> tuple[str, int]:
    """Stream `reader` into `writer` in 1 MiB chunks; return (sha256 hex, bytes copied).

    One thread on purpose: hashing in one thread while writing in another measured slower on
    a two-core machine (bench/push_pull.py), and it would make the code harder to trust.
    """
    digest = hashlib.sha256()
    total = 0
    readinto = getattr(reader, "readinto", None)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while True:
        if readinto is not None:
            count = readinto(buffer)
            chunk: Any = view[:count]
        else:
            chunk = reader.read(CHUNK)
            count = len(chunk)
        if not count:
            break
        digest.update(chunk)
        writer.write(chunk)
        total += count
        if progress:
            progress(count)
    return digest.hexdigest(), total
