"""Where advisories come from: an offline OSV export, or the OSV API through a fetcher.

An offline database is what OSV publishes per ecosystem (`PyPI.zip`, one JSON record per
member), a folder of OSV JSON files, or one JSON file holding a record or a list of them.
Production networks are often closed, so the offline file is the first-class path.

Every way a database can fail to answer raises `Unreadable` with a reason that names the
database but never quotes its bytes: the audit turns it into status "unknown". A database
that parses but holds no PyPI advisory is refused too: auditing against nothing would read
as "no known vulnerabilities".
"""

from __future__ import annotations

import json
import os
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name

from shipyard.depaudit.osv import ECOSYSTEM, is_pypi, shown

OSV_API = "https://api.osv.dev/v1/query"
MAX_RECORD_BYTES = 16 << 20  # the largest real OSV record is a few hundred KiB
MAX_PAGES = 50
TIMEOUT_S = 15.0


class Unreadable(Exception):
    """The database could not be read or reached; `reason` is safe to print."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Fetcher(Protocol):
    """POST a JSON body to `url` and return the response bytes; raise on any failure."""

    def __call__(self, url: str, body: bytes) -> bytes: ...


class Source(Protocol):
    """Advisories for one package; `prematched` when the source already matched versions."""

    prematched: bool

    @property
    def description(self) -> str: ...

    def lookup(self, name: str, version: str) -> list[dict[str, Any]]: ...


@dataclass
class OfflineSource:
    description: str
    by_name: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    records: int = 0
    newest: str = ""  # the latest `modified` timestamp: how fresh the export is
    prematched: bool = False

    def lookup(self, name: str, version: str) -> list[dict[str, Any]]:
        return list(self.by_name.get(canonicalize_name(name), []))


def load(path: Path) -> OfflineSource:
    """Read an OSV export (zip, folder, or JSON file) and index its PyPI records by name."""
    path = Path(path)
    source = OfflineSource(description=f"offline OSV database {path}")
    if not path.exists():
        raise Unreadable(f"The vulnerability database {path} does not exist.")
    seen = 0
    for origin, data in _documents(path):
        for record in data if isinstance(data, list) else [data]:
            _check_record(record, origin)
            seen += 1
            _index(source, record)
    if seen == 0:
        raise Unreadable(f"The vulnerability database {path} holds no OSV records.")
    if source.records == 0:
        raise Unreadable(
            f"The vulnerability database {path} holds {seen} records but none for {ECOSYSTEM}."
        )
    return source


def _documents(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        if path.is_dir():
            yield from _folder(path)
        elif zipfile.is_zipfile(path):
            yield from _zip(path)
        else:
            yield path.name, _parse(_read_bounded(path), path.name)
    except OSError as exc:
        raise Unreadable(
            f"The vulnerability database {path} could not be read ({type(exc).__name__})."
        ) from exc


def _folder(root: Path) -> Iterator[tuple[str, Any]]:
    # os.walk does not follow symlinked folders, so a link loop cannot hang the audit.
    for folder, dirs, names in os.walk(root, onerror=_raise):
        dirs.sort()
        for name in sorted(names):
            if name.endswith(".json"):
                member = Path(folder) / name
                relative = member.relative_to(root).as_posix()
                yield relative, _parse(_read_bounded(member), relative)


def _raise(exc: OSError) -> None:
    raise exc


def _zip(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.is_dir() or not info.filename.endswith(".json"):
                    continue
                if info.file_size > MAX_RECORD_BYTES:
                    raise Unreadable(f"{path}: member {shown(info.filename)} is too large.")
                with archive.open(info) as handle:
                    raw = handle.read(MAX_RECORD_BYTES + 1)
                yield info.filename, _parse(raw, f"{path.name}:{info.filename}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise Unreadable(f"The vulnerability database {path} is not a readable zip.") from exc


def _read_bounded(path: Path) -> bytes:
    with open(path, "rb") as handle:
        raw = handle.read(MAX_RECORD_BYTES + 1)
    if len(raw) > MAX_RECORD_BYTES:
        raise Unreadable(f"{path} is larger than {MAX_RECORD_BYTES} bytes.")
    return raw


def _parse(raw: bytes, origin: str) -> Any:
    if len(raw) > MAX_RECORD_BYTES:
        raise Unreadable(f"{shown(origin)} is larger than {MAX_RECORD_BYTES} bytes.")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # One corrupt record means a corrupt download: trusting the rest would hide it.
        raise Unreadable(f"{shown(origin)} is not valid OSV JSON.") from exc


def _check_record(record: Any, origin: str) -> None:
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        raise Unreadable(f"{shown(origin)} is not an OSV record (no string 'id').")
    affected = record.get("affected", [])
    if not isinstance(affected, list) or not all(isinstance(a, dict) for a in affected):
        raise Unreadable(f"{shown(origin)}: 'affected' is not a list of objects.")


def _index(source: OfflineSource, record: dict[str, Any]) -> None:
    names = set()
    for item in record.get("affected", []):
        package = item.get("package")
        if isinstance(package, dict) and is_pypi(package.get("ecosystem")):
            name = package.get("name")
            if isinstance(name, str) and name:
                names.add(canonicalize_name(name))
    if not names:
        return
    source.records += 1
    modified = record.get("modified")
    if isinstance(modified, str) and modified > source.newest:
        source.newest = modified  # RFC 3339 UTC strings sort as times
    for name in names:
        source.by_name.setdefault(name, []).append(record)


def urllib_fetcher(timeout: float = TIMEOUT_S) -> Fetcher:
    """The default fetcher: HTTPS only (loopback HTTP for tests), with a timeout."""

    def fetch(url: str, body: bytes) -> bytes:
        parts = urlsplit(url)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise Unreadable("The OSV API URL must be https (or http on loopback).")
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked just above
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return bytes(response.read(MAX_RECORD_BYTES * 4))

    return fetch


@dataclass
class OnlineSource:
    """The OSV API's /v1/query, which matches versions itself (so `prematched`)."""

    fetcher: Fetcher
    url: str = OSV_API
    prematched: bool = True
    cache: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return f"OSV API {urlsplit(self.url).netloc or self.url}"

    def lookup(self, name: str, version: str) -> list[dict[str, Any]]:
        key = (canonicalize_name(name), version)
        if key not in self.cache:
            self.cache[key] = self._query(*key)
        return list(self.cache[key])

    def _query(self, name: str, version: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token = ""
        for _ in range(MAX_PAGES):
            query: dict[str, Any] = {
                "package": {"name": name, "ecosystem": ECOSYSTEM},
                "version": version,
            }
            if token:
                query["page_token"] = token
            try:
                raw = self.fetcher(self.url, json.dumps(query).encode())
            except Unreadable:
                raise
            except Exception as exc:  # any transport failure means "not reached"
                raise Unreadable(
                    f"The {self.description} could not be reached ({type(exc).__name__})."
                ) from exc
            page = _parse(raw, self.description)
            vulns = page.get("vulns", []) if isinstance(page, dict) else None
            if not isinstance(vulns, list):
                raise Unreadable(f"The {self.description} answered something that is not OSV.")
            for record in vulns:
                _check_record(record, self.description)
            found += vulns
            token = page.get("next_page_token") or ""
            if not isinstance(token, str) or not token:
                return found
        raise Unreadable(f"The {self.description} kept paging past {MAX_PAGES} pages.")
