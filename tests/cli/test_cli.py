"""The command line, run as a real subprocess: exit codes, --json, errors that point to a fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(tmp_path):  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "SHIPYARD_HOME": str(tmp_path / "home"),
        "SHIPYARD_ACTOR": "tester",
        "COLUMNS": "200",
    }
    env.pop("SHIPYARD_DATABASE_URL", None)

    def invoke(*args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "shipyard.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        if check is not None:
            assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
        return proc

    return invoke


@pytest.fixture
def bundle(tmp_path, packaged) -> Path:
    dest = tmp_path / "tumours"
    shutil.copytree(packaged, dest)
    return dest


def test_help_everywhere(run):
    out = run("--help").stdout
    for command in (
        "init",
        "package",
        "check",
        "push",
        "list",
        "show",
        "alias",
        "pull",
        "audit",
        "demo",
    ):
        assert command in out
        assert "Usage" in run(command, "--help").stdout


def test_check_push_list_show_alias_pull_audit(run, bundle, tmp_path):
    report = json.loads(run("check", str(bundle), "--json").stdout)
    assert report["fragile"] is False
    pushed = json.loads(run("push", str(bundle), "--json").stdout)
    assert pushed["created"] is True and pushed["version"] == "1.0.0"
    again = json.loads(run("push", str(bundle), "--json").stdout)
    assert again["created"] is False
    models = json.loads(run("list", "--json").stdout)
    assert [m["name"] for m in models] == ["tumours"]
    versions = json.loads(run("list", "tumours", "--json").stdout)
    assert [v["version"] for v in versions] == ["1.0.0"]
    run("alias", "tumours", "production", "1.0.0")
    shown = json.loads(run("show", "tumours@production", "--json").stdout)
    assert shown["manifest"]["owner"]["name"] == "Ana Lima"
    assert shown["aliases"] == ["production"]
    human = run("show", "tumours:1.0.0").stdout
    assert "tumours:1.0.0" in human and "accuracy" in human
    dest = tmp_path / "pulled"
    run("pull", "tumours@production", str(dest))
    assert (dest / "shipyard.yaml").read_bytes() == (bundle / "shipyard.yaml").read_bytes()
    entries = json.loads(run("audit", "--json").stdout)
    actions = [e["action"] for e in entries]
    assert "push" in " ".join(actions) and any("alias" in a for a in actions)
    assert all(e["actor"] == "tester" for e in entries)
    assert json.loads(run("audit", "verify", "--json").stdout)["ok"] is True


def test_fragile_bundle_is_refused_unless_overridden(run, bundle):
    manifest = yaml.safe_load((bundle / "shipyard.yaml").read_text())
    manifest.pop("owner")
    (bundle / "shipyard.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    checked = run("check", str(bundle), check=1)
    assert "missing-owner" in checked.stdout
    refused = run("push", str(bundle), check=5)
    assert "--allow-fragile" in refused.stderr
    assert json.loads(run("list", "--json").stdout) == []
    run("push", str(bundle), "--allow-fragile")
    entries = json.loads(run("audit", "--json").stdout)
    override = [e for e in entries if "fragile" in e["action"]]
    assert override and "missing-owner" in json.dumps(override[0]["details"])


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("show", "no-such-model:1"), 3, "shipyard list"),
        (("show", "Bad Name!"), 2, "NAME:VERSION"),
        (("pull", "nope:1", "out"), 3, "no model"),
        (("check", "missing-folder"), 1, "No shipyard.yaml"),
        (("push", "missing-folder"), 2, "No shipyard.yaml"),
        (("package", "missing-folder"), 2, "No shipyard.yaml"),
        (("package", ".", "--threshold", "accuracy"), 2, "METRIC=NUMBER"),
        (("init", "x", "--name", "ok", "--owner", "no-contact"), 2, "Name <contact>"),
        (
            ("--database-url", "postgresql+psycopg://u:hunter2@127.0.0.1:1/db", "list"),
            2,
            "127.0.0.1",
        ),
    ],
)
def test_errors_have_exit_codes_and_hints(run, args, code, needle):
    proc = run(*args, check=code)
    assert needle in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr


def test_tampered_bundle_push_writes_nothing(run, bundle):
    artifact = next((bundle / "model").iterdir())
    artifact.write_bytes(artifact.read_bytes() + b"x")
    proc = run("push", str(bundle), "--allow-fragile", check=2)
    assert "sha256" in proc.stderr
    assert json.loads(run("list", "--json").stdout) == []


def test_init_package_check(run, tmp_path):
    run("init", "scorer", "--name", "scorer", "--owner", "Bo <bo@x.io>")
    data = tmp_path / "eval.csv"
    data.write_text("x1,x2,y\n1,2,1.0\n2,2,1.5\n0,4,0.0\n")
    out = json.loads(
        run(
            "package",
            "scorer",
            "--data",
            str(data),
            "--target",
            "y",
            "--threshold",
            "rmse=0.1",
            "--json",
        ).stdout
    )
    assert out["evaluation"]["metrics"][0]["name"] == "rmse"
    run("check", "scorer")


def test_python_dash_m_shipyard_runs_the_cli_with_the_collector_back_on(tmp_path):
    """`python -m shipyard` is the console script's entry: it pauses the cyclic collector
    only while the CLI imports, so the command itself runs with it on."""
    probe = (
        "import gc, runpy, sys\n"
        "import shipyard.cli as cli\n"
        "seen = []\n"
        "cli.cli.add_command(cli.click.Command('gc-state', "
        "callback=lambda: seen.append(gc.isenabled())))\n"
        "sys.argv = ['shipyard', 'gc-state']\n"
        "runpy.run_module('shipyard', run_name='__main__')\n"
        "print(seen)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120,
                          env={**os.environ, "SHIPYARD_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[True]"
    version = subprocess.run([sys.executable, "-m", "shipyard", "--version"],
                             capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and "version" in version.stdout


def test_rich_is_imported_only_when_something_is_drawn() -> None:
    """rich costs 50 ms or more to import: the server's cold start and --json output skip it."""
    code = ("import sys, shipyard.cli, shipyard.serving.server, shipyard.monitoring.monitor; "
            "print('rich' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
