"""`shipyard keys` and `shipyard audit BUNDLE` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shipyard.cli", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=120)


def test_a_key_is_shown_once_stored_hashed_and_revocable(tmp_path: Path):
    home = tmp_path / "home"
    created = run(home, "keys", "create", "--role", "predictor", "--deployment", "iris",
                  "--expires", "30d", "--name", "batch-job", "--json")
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    key = record["key"]
    assert key.startswith("sy_") and record["role"] == "predictor"
    assert record["deployments"] == ["iris"] and record["expires_at"]
    listed = run(home, "keys", "list", "--json")
    assert key not in listed.stdout and "sha256:" not in listed.stdout
    assert json.loads(listed.stdout)[0]["id"] == record["id"]
    database = (home / "registry.db").read_bytes()
    assert key.encode() not in database and key.split("_")[2].encode() not in database
    revoked = run(home, "keys", "revoke", record["id"], "--json")
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["revoked_at"]
    log = json.loads(run(home, "audit", "--json").stdout)
    assert [e["action"] for e in log[:2]] == ["key.revoke", "key.create"]
    assert key not in json.dumps(log)
    unknown = run(home, "keys", "revoke", "nosuchkey")
    assert unknown.returncode == 3
    bad = run(home, "keys", "create", "--role", "owner")
    assert bad.returncode == 2


def test_audit_bundle_never_reports_clean_without_a_database(tmp_path: Path,
                                                            make_bundle: Callable[..., Path]):
    bundle = make_bundle()
    result = run(tmp_path / "home", "audit", str(bundle), "--json")
    assert result.returncode == 2, result.stderr  # unknown, not clean
    report = json.loads(result.stdout)
    assert report["status"] == "unknown"
    listing = run(tmp_path / "home", "audit", "--json")  # the audit log still lists
    assert listing.returncode == 0 and json.loads(listing.stdout) == []
