"""The artifact store: content addressing, atomic publication, verification both ways."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from shipyard.errors import BundleError, ConfigError, IntegrityError, NotFoundError
from shipyard.registry.store import (
    BUFFERS,
    CHUNK,
    THREADED_ABOVE,
    FsspecStore,
    LocalStore,
    Store,
    Upload,
    blob_key,
    open_store,
)

DATA = b"model bytes " * 200_000  # ~2.4 MB: several chunks
DIGEST = hashlib.sha256(DATA).hexdigest()
# Large enough for the threaded copy, and more chunks than it has buffers.
BIG = bytes(range(256)) * ((2 * BUFFERS + 1) * CHUNK // 256 + 7)
BIG_DIGEST = hashlib.sha256(BIG).hexdigest()


@pytest.fixture(params=["local", "file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        yield open_store(str(tmp_path / "store"))
    elif request.param == "file":
        yield open_store(f"file://{tmp_path / 'store'}")
    else:
        root = f"memory://shipyard-test-{uuid.uuid4().hex}/store"
        yield open_store(root)
        memory = fsspec.filesystem("memory")
        if memory.exists(root):
            memory.rm(root, recursive=True)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "weights.bin"
    path.write_bytes(DATA)
    return path


def test_plain_paths_are_local_and_urls_go_through_fsspec(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path / "s")), LocalStore)
    assert isinstance(open_store("memory://bucket/s"), FsspecStore)


def test_put_then_get_round_trips_and_reports_progress(
    store: Store, source: Path, tmp_path: Path
) -> None:
    seen: list[int] = []
    assert store.put(source, DIGEST, len(DATA), seen.append) is True
    assert sum(seen) == len(DATA) and max(seen) <= CHUNK
    assert store.has(DIGEST, len(DATA))
    out = tmp_path / "out.bin"
    store.get(DIGEST, len(DATA), out)
    assert out.read_bytes() == DATA


def test_a_large_file_round_trips_through_the_threaded_copy(store: Store, tmp_path: Path) -> None:
    assert len(BIG) > THREADED_ABOVE
    source = tmp_path / "big.bin"
    source.write_bytes(BIG)
    seen: list[int] = []
    assert store.put(source, BIG_DIGEST, len(BIG), seen.append) is True
    assert sum(seen) == len(BIG) and max(seen) <= CHUNK
    out = tmp_path / "out.bin"
    seen.clear()
    store.get(BIG_DIGEST, len(BIG), out, seen.append)
    assert out.read_bytes() == BIG and sum(seen) == len(BIG)


def test_a_large_file_that_does_not_match_leaves_nothing(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(BIG[:-1] + b"!")  # the last byte differs: found only at the very end
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        store.put(source, BIG_DIGEST, len(BIG))
    assert not store.has(BIG_DIGEST, len(BIG))
    assert _temp_blobs(store) == []


def test_a_large_damaged_blob_is_refused_and_its_copy_removed(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(BIG)
    store.put(source, BIG_DIGEST, len(BIG))
    _overwrite_blob(store, BIG_DIGEST, BIG[:-1] + b"!")
    out = tmp_path / "out.bin"
    with pytest.raises(IntegrityError, match="damaged"):
        store.get(BIG_DIGEST, len(BIG), out)
    assert not out.exists() and not store.has(BIG_DIGEST, len(BIG))


def test_put_all_publishes_nothing_unless_every_file_matches(
    store: Store, source: Path, tmp_path: Path
) -> None:
    good = Upload(source, DIGEST, len(DATA), "model/weights.bin")
    bad_source = tmp_path / "other.bin"
    bad_source.write_bytes(b"x" * 100)
    bad = Upload(bad_source, hashlib.sha256(b"y" * 100).hexdigest(), 100, "model/other.bin")
    with pytest.raises(IntegrityError, match="'model/other.bin' does not match its sha256"):
        store.put_all([good, bad])
    assert not store.has(DIGEST, len(DATA))  # the good file was checked, but not published
    assert _temp_blobs(store) == []
    twice = Upload(source, DIGEST, len(DATA), "copy/weights.bin")
    assert store.put_all([good, twice]) == 1  # the same content twice: one blob
    assert store.has(DIGEST, len(DATA))


def test_a_stored_blob_does_not_excuse_a_file_that_does_not_match(
    store: Store, source: Path, tmp_path: Path
) -> None:
    store.put(source, DIGEST, len(DATA))
    tampered = tmp_path / "tampered.bin"
    tampered.write_bytes(DATA[:-1] + b"!")  # same size, so the blob counts as stored
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        store.put(tampered, DIGEST, len(DATA))
    assert store.has(DIGEST, len(DATA))


def test_putting_the_same_content_again_is_a_no_op(store: Store, source: Path) -> None:
    store.put(source, DIGEST, len(DATA))
    assert store.put(source, DIGEST, len(DATA)) is False


def test_a_source_that_does_not_match_its_digest_leaves_nothing(store: Store, source: Path) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        store.put(source, wrong, len(DATA))
    assert not store.has(wrong, len(DATA))
    assert _temp_blobs(store) == []


def test_a_damaged_blob_is_refused_on_the_way_out(
    store: Store, source: Path, tmp_path: Path
) -> None:
    store.put(source, DIGEST, len(DATA))
    _overwrite_blob(store, DIGEST, b"X" * len(DATA))
    with pytest.raises(IntegrityError, match="damaged"):
        store.get(DIGEST, len(DATA), tmp_path / "out.bin")
    assert not store.has(DIGEST, len(DATA))  # removed, so the next put stores it again


def test_get_never_touches_an_existing_file(store: Store, source: Path, tmp_path: Path) -> None:
    store.put(source, DIGEST, len(DATA))
    existing = tmp_path / "existing.bin"
    existing.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        store.get(DIGEST, len(DATA), existing)
    assert existing.read_bytes() == b"mine"


def test_a_missing_blob_is_not_found(store: Store, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="missing from the artifact store"):
        store.get(DIGEST, 1, tmp_path / "out.bin")


@pytest.mark.parametrize(
    "digest",
    [
        "../../../../etc/passwd",
        "sha256:" + "a" * 64,
        "A" * 64,
        "a" * 63,
        "a" * 64 + "/..",
        "a" * 64 + "\n",
        "",
    ],
)
def test_digests_are_checked_before_any_path_use(
    store: Store, source: Path, tmp_path: Path, digest: str
) -> None:
    with pytest.raises(BundleError, match="Expected 64 lowercase hex characters"):
        blob_key(digest)
    with pytest.raises(BundleError):
        store.put(source, digest, len(DATA))
    with pytest.raises(BundleError):
        store.get(digest, len(DATA), tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_an_unknown_store_scheme_is_a_config_error_without_the_url() -> None:
    with pytest.raises(ConfigError, match="scheme 'nosuchfs'") as caught:
        open_store("nosuchfs://user:secret@host/store")
    assert "secret" not in str(caught.value)


def test_blobs_fan_out_by_their_first_two_hex_digits() -> None:
    assert blob_key(DIGEST) == f"sha256/{DIGEST[:2]}/{DIGEST}"


def _temp_blobs(store: Store) -> list[str]:
    if isinstance(store, LocalStore):
        return [p.name for p in (store.root / "tmp").iterdir()]
    assert isinstance(store, FsspecStore)
    tmp = f"{store.root}/tmp"
    return list(store.fs.ls(tmp)) if store.fs.exists(tmp) else []


def _overwrite_blob(store: Store, digest: str, data: bytes) -> None:
    if isinstance(store, LocalStore):
        (store.root / blob_key(digest)).write_bytes(data)
        return
    assert isinstance(store, FsspecStore)
    with store.fs.open(f"{store.root}/{blob_key(digest)}", "wb") as handle:
        handle.write(data)
