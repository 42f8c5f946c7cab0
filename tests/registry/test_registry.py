"""Registry behaviour: push, resolve, pull, fetch, aliases, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import fsspec
import pytest
from sqlalchemy import func, select

from shipyard.bundle.files import verify
from shipyard.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
from shipyard.errors import (
    BadReferenceError,
    BundleError,
    ConflictError,
    FragileBundleError,
    IntegrityError,
    ManifestError,
    NotFoundError,
    UserError,
)
from shipyard.registry import Registry
from shipyard.registry.store import LocalStore, blob_key
from shipyard.registry.tables import files, versions
from shipyard.settings import Settings

MakeBundle = Callable[..., Path]


def _blob_count(registry: Registry) -> int:
    assert isinstance(registry.store, LocalStore)
    return sum(1 for _ in (registry.store.root / "sha256").rglob("*") if _.is_file())


def _row_count(registry: Registry) -> int:
    with registry.database.read() as conn:
        total = conn.execute(select(func.count()).select_from(versions)).scalar_one()
        return int(total) + int(conn.execute(select(func.count()).select_from(files)).scalar_one())


def test_push_registers_and_pull_writes_an_identical_verified_bundle(
    registry: Registry, make_bundle: MakeBundle, tmp_path: Path
) -> None:
    bundle = make_bundle(files={"code/pre.py": b"def f(x):\n    return x\n"})
    result = registry.push(bundle)
    assert (result.name, result.version, result.created) == ("iris", "1.0", True)
    assert result.digest == Manifest.read(bundle).digest()
    record = registry.resolve("iris:1.0")
    assert record.digest == result.digest and record.size == 10 + 23
    assert [f.path for f in record.files] == ["code/pre.py", "model/weights.bin"]
    pulled = registry.pull("iris:1.0", tmp_path / "out" / "iris")
    assert (pulled / MANIFEST_NAME).read_bytes() == (bundle / MANIFEST_NAME).read_bytes()
    assert (pulled / "code/pre.py").read_bytes() == (bundle / "code/pre.py").read_bytes()
    verify(pulled, Manifest.read(pulled))
    assert [p.name for p in pulled.parent.iterdir()] == ["iris"]  # no partial left beside


def test_pushing_identical_content_again_is_a_no_op(
    registry: Registry, make_bundle: MakeBundle
) -> None:
    first = registry.push(make_bundle())
    again = registry.push(make_bundle())  # a second folder with the same content
    assert again.created is False and again.digest == first.digest
    assert len(registry.versions("iris")) == 1
    assert [e.action for e in registry.audit()] == ["push"]


def test_different_content_under_an_existing_version_is_refused(
    registry: Registry, make_bundle: MakeBundle
) -> None:
    registry.push(make_bundle(content=b"one"))
    with pytest.raises(ConflictError) as caught:
        registry.push(make_bundle(content=b"two"))
    assert "iris:1.0" in caught.value.message and "immutable" in caught.value.message
    assert "Bump `version`" in caught.value.hint and caught.value.status == 409
    assert registry.resolve("iris:1.0").files[0].size == 3


def test_a_tampered_bundle_writes_nothing(
    sqlite_registry: Registry, make_bundle: MakeBundle
) -> None:
    bundle = make_bundle()
    (bundle / "model/weights.bin").write_bytes(b"tampered!!")
    with pytest.raises(IntegrityError):
        sqlite_registry.push(bundle)
    (bundle / "model/weights.bin").write_bytes(b"weights v1")
    (bundle / "extra.txt").write_text("undeclared")
    with pytest.raises(BundleError, match="not listed"):
        sqlite_registry.push(bundle)
    assert _blob_count(sqlite_registry) == 0 and _row_count(sqlite_registry) == 0
    assert sqlite_registry.audit() == []


def test_a_bundle_with_one_tampered_file_of_several_writes_nothing(
    sqlite_registry: Registry, make_bundle: MakeBundle
) -> None:
    bundle = make_bundle(files={"code/pre.py": b"x = 1\n", "zz/last.bin": b"last file"})
    (bundle / "zz/last.bin").write_bytes(b"LAST FILE")  # same size: found only by hashing
    with pytest.raises(IntegrityError, match="'zz/last.bin' does not match its sha256"):
        sqlite_registry.push(bundle)
    assert _blob_count(sqlite_registry) == 0 and _row_count(sqlite_registry) == 0
    assert isinstance(sqlite_registry.store, LocalStore)
    assert not any((sqlite_registry.store.root / "tmp").iterdir())
    (bundle / "zz/last.bin").write_bytes(b"last file!")  # another size: refused before copying
    with pytest.raises(IntegrityError, match="sha256") as caught:
        sqlite_registry.push(bundle)
    assert "10 bytes" in caught.value.message and caught.value.details["file"] == "zz/last.bin"
    assert _blob_count(sqlite_registry) == 0 and sqlite_registry.audit() == []


def test_a_folder_without_a_manifest_is_a_manifest_error(
    sqlite_registry: Registry, tmp_path: Path
) -> None:
    with pytest.raises(ManifestError, match=r"No shipyard\.yaml"):
        sqlite_registry.push(tmp_path)


def test_a_fragile_bundle_is_refused_unless_allowed_on_the_record(
    registry: Registry, make_bundle: MakeBundle
) -> None:
    reasons = ["pickle artifact without signature", "no evaluation report"]
    with pytest.raises(FragileBundleError) as caught:
        registry.push(make_bundle(), fragile_reasons=reasons)
    assert all(r in caught.value.message for r in reasons)
    assert "--allow-fragile" in caught.value.hint
    assert registry.models() == []
    registry.push(make_bundle(), fragile_reasons=reasons, allow_fragile=True, actor="ana")
    latest = registry.audit()[0]
    assert (latest.action, latest.target, latest.actor) == ("push.allow_fragile", "iris:1.0", "ana")
    assert latest.details["reasons"] == reasons


def test_resolve_follows_versions_aliases_and_latest(
    registry: Registry, make_bundle: MakeBundle
) -> None:
    registry.push(make_bundle(version="2.0", content=b"2"))
    registry.push(make_bundle(version="10.0", content=b"10"))
    registry.push(make_bundle(version="3.0", content=b"3"))
    registry.set_alias("iris", "production", "10.0")
    assert registry.resolve("iris").version == "3.0"  # most recently pushed
    assert registry.resolve("iris@production").version == "10.0"
    assert registry.resolve("iris:2.0").version == "2.0"
    assert [v.version for v in registry.versions("iris")] == ["2.0", "10.0", "3.0"]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("ghost", "no model by that name"),
        ("iris:9.9", "no version '9.9'"),
        ("iris@staging", "no alias 'staging'"),
    ],
)
def test_unknown_things_are_not_found_with_a_hint(
    registry: Registry, make_bundle: MakeBundle, ref: str, message: str
) -> None:
    registry.push(make_bundle())
    with pytest.raises(NotFoundError, match=message) as caught:
        registry.resolve(ref)
    assert "shipyard" in caught.value.hint and caught.value.status == 404


def test_bad_references_are_refused_before_any_query(sqlite_registry: Registry) -> None:
    for bad in ("../x", "iris:", "IRIS"):
        with pytest.raises(BadReferenceError):
            sqlite_registry.resolve(bad)
    with pytest.raises(BadReferenceError):
        sqlite_registry.set_alias("iris", "Prod Uction", "1.0")


def test_aliases_move_atomically_with_history(registry: Registry, make_bundle: MakeBundle) -> None:
    registry.push(make_bundle(version="1.0", content=b"1"))
    registry.push(make_bundle(version="2.0", content=b"2"))
    registry.set_alias("iris", "production", "1.0", actor="ana")
    registry.set_alias("iris", "staging", "2.0", actor="ana")
    registry.set_alias("iris", "production", "2.0", actor="bo")
    registry.set_alias("iris", "production", "2.0", actor="bo")  # no move, no event
    assert registry.aliases("iris") == {"production": "2.0", "staging": "2.0"}
    history = registry.alias_history("iris", "production")
    assert [(e.from_version, e.to_version, e.actor) for e in history] == [
        (None, "1.0", "ana"),
        ("1.0", "2.0", "bo"),
    ]
    assert len(registry.alias_history("iris")) == 3
    with pytest.raises(NotFoundError):
        registry.set_alias("iris", "production", "9.9")
    assert registry.aliases("iris")["production"] == "2.0"


def test_models_summarises_versions_latest_and_aliases(
    registry: Registry, make_bundle: MakeBundle
) -> None:
    registry.push(make_bundle(name="iris", version="1.0"))
    registry.push(make_bundle(name="iris", version="1.1", content=b"x"))
    registry.push(make_bundle(name="fraud", version="7"))
    registry.set_alias("iris", "production", "1.0")
    summary = {m.name: m for m in registry.models()}
    assert list(summary) == ["fraud", "iris"]
    assert (summary["iris"].versions, summary["iris"].latest) == (2, "1.1")
    assert summary["iris"].aliases == {"production": "1.0"}
    assert summary["fraud"].aliases == {}


def test_pull_refuses_an_occupied_destination(
    sqlite_registry: Registry, make_bundle: MakeBundle, tmp_path: Path
) -> None:
    sqlite_registry.push(make_bundle())
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        sqlite_registry.pull("iris", occupied)
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (sqlite_registry.pull("iris", empty) / MANIFEST_NAME).is_file()


def test_a_damaged_blob_fails_the_pull_and_leaves_nothing(
    sqlite_registry: Registry, make_bundle: MakeBundle, tmp_path: Path
) -> None:
    record = sqlite_registry.push(make_bundle())
    blob = sqlite_registry.resolve("iris").files[0].sha256
    assert isinstance(sqlite_registry.store, LocalStore)
    (sqlite_registry.store.root / blob_key(blob)).write_bytes(b"corrupted!")
    with pytest.raises(IntegrityError, match="damaged"):
        sqlite_registry.pull(record.ref, tmp_path / "out" / "iris")
    assert list((tmp_path / "out").iterdir()) == []


def test_pushing_again_repairs_a_damaged_blob(
    sqlite_registry: Registry, make_bundle: MakeBundle, tmp_path: Path
) -> None:
    bundle = make_bundle()
    sqlite_registry.push(bundle)
    blob = sqlite_registry.resolve("iris").files[0].sha256
    assert isinstance(sqlite_registry.store, LocalStore)
    (sqlite_registry.store.root / blob_key(blob)).write_bytes(b"corrupted!")  # same size
    with pytest.raises(IntegrityError):
        sqlite_registry.pull("iris", tmp_path / "first")
    assert sqlite_registry.push(bundle).created is False
    pulled = sqlite_registry.pull("iris", tmp_path / "second")
    assert (pulled / "model/weights.bin").read_bytes() == b"weights v1"


def test_fetch_downloads_once_into_the_cache_and_repairs_a_damaged_copy(
    sqlite_registry: Registry, make_bundle: MakeBundle
) -> None:
    sqlite_registry.push(make_bundle())
    calls: list[tuple[int, int]] = []
    first = sqlite_registry.fetch("iris", progress=lambda done, total: calls.append((done, total)))
    assert first == sqlite_registry.settings.cache_dir / sqlite_registry.resolve("iris").digest
    assert calls[-1] == (10, 10)
    calls.clear()
    assert sqlite_registry.fetch("iris:1.0", progress=lambda d, t: calls.append((d, t))) == first
    assert calls == []  # reused, not downloaded again
    (first / "model/weights.bin").write_bytes(b"short")
    again = sqlite_registry.fetch("iris")
    assert (again / "model/weights.bin").read_bytes() == b"weights v1"


def test_push_reports_progress_in_bytes(sqlite_registry: Registry, make_bundle: MakeBundle) -> None:
    calls: list[tuple[int, int]] = []
    sqlite_registry.push(
        make_bundle(content=b"z" * 3_000_000), progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (3_000_000, 3_000_000)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_a_signature_travels_with_the_bundle(
    sqlite_registry: Registry, make_bundle: MakeBundle, tmp_path: Path
) -> None:
    bundle = make_bundle()
    (bundle / SIGNATURE_NAME).write_bytes(b"ed25519 signature bytes")
    sqlite_registry.push(bundle)
    pulled = sqlite_registry.pull("iris", tmp_path / "pulled")
    assert (pulled / SIGNATURE_NAME).read_bytes() == b"ed25519 signature bytes"


def test_the_manifest_comes_back_byte_for_byte(
    registry: Registry, make_bundle: MakeBundle, tmp_path: Path
) -> None:
    bundle = make_bundle()
    crlf = (bundle / MANIFEST_NAME).read_bytes().replace(b"\n", b"\r\n")
    (bundle / MANIFEST_NAME).write_bytes(crlf)  # signatures cover the exact bytes
    registry.push(bundle)
    assert (registry.pull("iris", tmp_path / "pulled") / MANIFEST_NAME).read_bytes() == crlf


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_an_fsspec_store_round_trips(
    settings: Settings, make_bundle: MakeBundle, tmp_path: Path, scheme: str
) -> None:
    if scheme == "memory":
        url = f"memory://shipyard-test-{uuid.uuid4().hex}/store"
    else:
        url = f"file://{tmp_path / 'fsspec-store'}"
    with Registry.open(settings.model_copy(update={"store_url": url})) as registry:
        registry.push(make_bundle(content=b"q" * 2_500_000))
        pulled = registry.pull("iris", tmp_path / "pulled")
        assert (pulled / "model/weights.bin").read_bytes() == b"q" * 2_500_000
    if scheme == "memory":
        fsspec.filesystem("memory").rm(url, recursive=True)
    else:
        assert not any((tmp_path / "fsspec-store" / "tmp").iterdir())


def test_reopening_keeps_everything(settings: Settings, make_bundle: MakeBundle) -> None:
    with Registry.open(settings) as registry:
        registry.push(make_bundle())
        registry.set_alias("iris", "production", "1.0")
    with Registry.open(settings) as registry:
        assert registry.resolve("iris@production").version == "1.0"
        assert registry.verify_audit().entries == 2
    assert "***" not in repr(registry) and "registry.db" in repr(registry)


def test_the_registry_never_imports_a_runtime_or_a_framework() -> None:
    code = (
        "import sys, shipyard.registry; "
        "bad = [m for m in sys.modules if m.startswith('shipyard.runtimes') "
        "or m.split('.')[0] in ('torch', 'sklearn', 'xgboost', 'lightgbm', 'onnxruntime')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
