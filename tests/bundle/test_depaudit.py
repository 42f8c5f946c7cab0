"""audit_bundle against a small OSV database made here: offline zip, folder, and a local API."""

from __future__ import annotations

import json
import threading
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shipyard.bundle.check import is_fragile
from shipyard.bundle.manifest import MANIFEST_NAME, Dependencies, Manifest
from shipyard.depaudit import audit_bundle, critical_findings, urllib_fetcher
from shipyard.errors import ConfigError, ManifestError

CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8

# Real OSV records, shaped like osv.dev's PyPI export (PYSEC and GHSA twins linked by aliases).
ADVISORIES: list[dict[str, Any]] = [
    {
        "schema_version": "1.6.0",
        "id": "GHSA-crit-0001-aaaa",
        "modified": "2024-05-01T12:00:00Z",
        "published": "2024-04-01T12:00:00Z",
        "aliases": ["CVE-2024-0001", "PYSEC-2024-1"],
        "summary": "Remote code execution when loading a crafted file",
        "severity": [{"type": "CVSS_V3", "score": CRITICAL}],
        "affected": [
            {
                "package": {
                    "ecosystem": "PyPI",
                    "name": "Tiny_Loader",
                    "purl": "pkg:pypi/tiny-loader",
                },
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0.1"}]}
                ],
            }
        ],
        "database_specific": {"severity": "CRITICAL"},
    },
    {
        "id": "PYSEC-2024-1",
        "modified": "2024-04-02T00:00:00Z",
        "aliases": ["CVE-2024-0001", "GHSA-crit-0001-aaaa"],
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "tiny-loader"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0.1"}]}
                ],
                "versions": ["1.0", "2.0.0"],
            }
        ],
    },
    {
        "id": "GHSA-with-drawn-0002",
        "modified": "2024-03-01T00:00:00Z",
        "withdrawn": "2024-03-02T00:00:00Z",
        "severity": [{"type": "CVSS_V3", "score": CRITICAL}],
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "plain-utils"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
            }
        ],
    },
    {
        "id": "GHSA-low-0003",
        "modified": "2024-02-01T00:00:00Z",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "plain.utils"},
                "ranges": [
                    {
                        "type": "ECOSYSTEM",
                        "events": [{"introduced": "3.0"}, {"last_affected": "3.1"}],
                    }
                ],
            }
        ],
        "database_specific": {"severity": "LOW"},
    },
    {
        "id": "NPM-same-name-0004",
        "modified": "2024-02-01T00:00:00Z",
        "severity": [{"type": "CVSS_V3", "score": CRITICAL}],
        "affected": [
            {
                "package": {"ecosystem": "npm", "name": "plain-utils"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}]}],
            }
        ],
    },
]


def with_dependencies(root: Path, packages: dict[str, str]) -> Path:
    manifest = Manifest.read(root)
    manifest.dependencies = Dependencies(python="3.11.7", packages=packages)
    (root / MANIFEST_NAME).write_text(manifest.to_yaml(), encoding="utf-8")
    return root


@pytest.fixture
def bundle(make_bundle) -> Path:
    return with_dependencies(
        make_bundle(), {"Tiny.Loader": "==2.0.0", "plain_utils": "==2.5", "numpy": "==1.26.4"}
    )


def write_zip(path: Path, records: list[dict[str, Any]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for record in records:
            archive.writestr(f"{record['id']}.json", json.dumps(record))
    return path


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return write_zip(tmp_path / "PyPI.zip", ADVISORIES)


def test_critical_advisory_is_found_in_an_offline_zip(bundle, database):
    report = audit_bundle(bundle, database=database)
    assert report.status == "vulnerable"
    assert report.exit_code() == 1
    (vuln,) = report.vulnerabilities  # the PYSEC twin is merged into the GHSA record
    assert (vuln.id, vuln.package, vuln.version) == ("GHSA-crit-0001-aaaa", "tiny-loader", "2.0.0")
    assert vuln.severity == "critical" and vuln.score == 9.8
    assert {"CVE-2024-0001", "PYSEC-2024-1"} <= set(vuln.aliases)
    assert vuln.fixed == ("2.0.1",)
    assert report.withdrawn == 1
    assert report.packages == {"numpy": "1.26.4", "plain-utils": "2.5", "tiny-loader": "2.0.0"}
    assert report.database_modified == "2024-05-01T12:00:00Z"
    assert report.to_dict()["counts"]["critical"] == 1


def test_critical_vulnerability_makes_the_bundle_fragile(bundle, database):
    findings = critical_findings(audit_bundle(bundle, database=database))
    assert is_fragile(findings)
    (critical,) = findings
    assert critical.code == "critical-vulnerability"
    assert "CVE-2024-0001" in critical.message and "2.0.1" in critical.hint
    assert critical.where == "dependencies.packages.tiny-loader"


def test_fixed_pin_is_clean(make_bundle, database):
    root = with_dependencies(make_bundle(), {"tiny-loader": "==2.0.1", "plain-utils": "==3.2"})
    report = audit_bundle(root, database=database)
    assert (report.status, report.exit_code(), report.problems) == ("clean", 0, [])
    assert critical_findings(report) == []


def test_non_critical_is_a_warning_and_respects_fail_on(make_bundle, database):
    root = with_dependencies(make_bundle(), {"plain-utils": "==3.1"})  # last_affected
    report = audit_bundle(root, database=database)
    (vuln,) = report.vulnerabilities
    assert (vuln.id, vuln.severity) == ("GHSA-low-0003", "low")
    assert report.exit_code(fail_on="low") == 1
    assert report.exit_code(fail_on="critical") == 0
    (finding,) = critical_findings(report)
    assert (finding.code, finding.severity) == ("known-vulnerability", "warning")


def test_folder_database_works_like_the_zip(bundle, tmp_path):
    folder = tmp_path / "osv" / "PyPI"
    folder.mkdir(parents=True)
    for record in ADVISORIES:
        (folder / f"{record['id']}.json").write_text(json.dumps(record), encoding="utf-8")
    (folder / "README.txt").write_text("not json, and ignored")
    report = audit_bundle(bundle, database=tmp_path / "osv")
    assert [v.id for v in report.vulnerabilities] == ["GHSA-crit-0001-aaaa"]


def test_single_json_file_with_a_list_of_records(bundle, tmp_path):
    path = tmp_path / "all.json"
    path.write_text(json.dumps(ADVISORIES), encoding="utf-8")
    assert audit_bundle(bundle, database=path).status == "vulnerable"


def assert_unknown(report, *words: str) -> None:
    assert report.status == "unknown"
    assert report.exit_code() == 2
    assert report.vulnerabilities == []
    text = " ".join(report.problems)
    for word in words:
        assert word in text
    assert is_fragile(critical_findings(report)) is False
    assert critical_findings(report)[-1].code == "audit-incomplete"


def test_missing_database_is_unknown_never_clean(bundle, tmp_path):
    assert_unknown(audit_bundle(bundle, database=tmp_path / "nope.zip"), "does not exist")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"PK\x03\x04 truncated zip",
        b"\x00\xff" * 100,
        b"{not json",
        '{"id": "caf\u00e9"'.encode(),  # truncated
        b"[1, 2, 3]",
        b'{"no": "id"}',
        b"[" * 100_000,  # deep nesting must not crash the audit
    ],
)
def test_corrupt_database_file_is_unknown(bundle, tmp_path, content):
    path = tmp_path / "PyPI.zip"
    path.write_bytes(content)
    report = audit_bundle(bundle, database=path)
    assert_unknown(report)
    assert not any("\x00" in p or "{not" in p for p in report.problems)  # never echoes bytes


def test_one_corrupt_member_spoils_the_whole_zip(bundle, tmp_path):
    path = write_zip(tmp_path / "PyPI.zip", ADVISORIES)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("GHSA-bad.json", '{"id": ')
    assert_unknown(audit_bundle(bundle, database=path), "GHSA-bad.json", "not valid OSV JSON")


def test_database_without_pypi_records_is_unknown(bundle, tmp_path):
    npm_only = [r for r in ADVISORIES if r["id"].startswith("NPM")]
    assert_unknown(
        audit_bundle(bundle, database=write_zip(tmp_path / "npm.zip", npm_only)), "none for PyPI"
    )
    assert_unknown(
        audit_bundle(bundle, database=write_zip(tmp_path / "e.zip", [])), "no OSV records"
    )


def test_no_database_at_all_is_unknown(bundle):
    assert_unknown(audit_bundle(bundle), "No vulnerability database")


def test_both_sources_is_a_config_error(bundle, database):
    with pytest.raises(ConfigError) as info:
        audit_bundle(bundle, database=database, online=True)
    assert info.value.hint


def test_stale_database_is_unknown(make_bundle, database):
    root = with_dependencies(make_bundle(), {"numpy": "==1.26.4"})
    later = datetime(2025, 1, 1, tzinfo=UTC)
    report = audit_bundle(root, database=database, max_age=timedelta(days=30), now=later)
    assert_unknown(report, "stale")
    fresh = audit_bundle(root, database=database, max_age=timedelta(days=400), now=later)
    assert fresh.status == "clean"


def test_bundle_without_dependencies_is_unknown(make_bundle, database):
    assert_unknown(audit_bundle(make_bundle(), database=database), "pins no dependencies")


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("numpy", ">=1.0"),
        ("numpy", "==1.*"),
        ("numpy", "==1.0,<2"),
        ("numpy", "===not-pep440~"),
        ("bad name!", "==1.0"),
        ("evil\nname\x1b[31m", "==1.0"),
        ("n" * 5000, "==1.0"),
        ("\u0430numpy", "==1.0"),  # a Cyrillic 'a': a homoglyph is not numpy
    ],
)
def test_unpinned_or_odd_dependencies_make_the_audit_incomplete(make_bundle, database, name, spec):
    root = with_dependencies(make_bundle(), {name: spec, "tiny-loader": "==2.0.1"})
    report = audit_bundle(root, database=database)
    assert_unknown(report, "could not be audited")
    (unchecked,) = report.unchecked
    assert "\n" not in unchecked.package and "\x1b" not in unchecked.package
    assert len(unchecked.package) <= 80


def test_vulnerable_outranks_incomplete(make_bundle, database):
    root = with_dependencies(make_bundle(), {"tiny-loader": "==1.0", "numpy": ">=1"})
    report = audit_bundle(root, database=database)
    assert report.status == "vulnerable" and report.exit_code() == 1
    assert report.unchecked and report.problems


def test_extras_and_spacing_in_pins_are_accepted(make_bundle, database):
    root = with_dependencies(make_bundle(), {"Tiny_Loader[fast]": "== 1.0"})
    assert audit_bundle(root, database=database).vulnerabilities[0].package == "tiny-loader"


def test_unreadable_bundle_raises_manifest_error(tmp_path, database):
    with pytest.raises(ManifestError):
        audit_bundle(tmp_path, database=database)


# The online path: a real HTTP server on loopback speaking the OSV /v1/query protocol.


class OsvApi(BaseHTTPRequestHandler):
    mode = "ok"
    queries: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).queries.append(query)
        if self.mode == "down":
            self.send_error(503)
            return
        name, version = query["package"]["name"], query["version"]
        # What osv.dev would answer for the bundle's pins (it matches versions itself).
        ids = {
            ("tiny-loader", "2.0.0"): ["GHSA-crit-0001-aaaa", "PYSEC-2024-1"],
            ("plain-utils", "2.5"): ["GHSA-with-drawn-0002"],
        }.get((name, version), [])
        vulns = [r for r in ADVISORIES if r["id"] in ids]
        if self.mode == "paged" and "page_token" not in query:
            body: dict[str, Any] = {"vulns": vulns[:1], "next_page_token": "p2"}
        elif self.mode == "paged":
            body = {"vulns": vulns[1:]}
        elif self.mode == "garbage":
            body = {"vulns": "nope"}
        else:
            body = {"vulns": vulns} if vulns else {}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    OsvApi.mode, OsvApi.queries = "ok", []
    server = ThreadingHTTPServer(("127.0.0.1", 0), OsvApi)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", ["ok", "paged"])
def test_online_audit_queries_the_api(bundle, api, mode):
    OsvApi.mode = mode
    report = audit_bundle(bundle, online=True, api_url=api)
    assert [v.id for v in report.vulnerabilities] == ["GHSA-crit-0001-aaaa"]
    assert report.withdrawn == 1
    assert {q["package"]["ecosystem"] for q in OsvApi.queries} == {"PyPI"}
    assert {q["package"]["name"] for q in OsvApi.queries} == {"numpy", "plain-utils", "tiny-loader"}


@pytest.mark.parametrize("mode", ["down", "garbage"])
def test_unreachable_or_broken_api_is_unknown(bundle, api, mode):
    OsvApi.mode = mode
    assert_unknown(audit_bundle(bundle, online=True, api_url=api), "OSV API")


def test_closed_network_is_unknown(bundle):
    # Port 9 on loopback: nothing listens, as on a production host with no egress.
    report = audit_bundle(
        bundle, online=True, api_url="http://127.0.0.1:9/v1/query", fetcher=urllib_fetcher(2.0)
    )
    assert_unknown(report, "could not be reached")


def test_plain_http_to_a_remote_host_is_refused(bundle):
    assert_unknown(
        audit_bundle(bundle, online=True, api_url="http://osv.example/v1/query"), "https"
    )


def test_injected_fetcher_that_raises_is_unknown(bundle):
    def fetcher(url: str, body: bytes) -> bytes:
        raise TimeoutError("slow")

    assert_unknown(audit_bundle(bundle, online=True, fetcher=fetcher), "TimeoutError")
