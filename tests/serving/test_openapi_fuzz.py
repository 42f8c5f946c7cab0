"""schemathesis against /openapi.json of a running server: no input may produce a 5xx."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from serving_harness import Server


def test_schemathesis_finds_no_server_error(server: Server, tmp_path: Path):
    schemathesis = Path(sys.executable).with_name("schemathesis")
    proc = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "60",
            "--workers",
            "1",
            "--suppress-health-check",
            "all",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "No issues found" in proc.stdout
    generated = re.search(r"(\d+) generated", proc.stdout)
    assert generated and int(generated.group(1)) >= 100, proc.stdout[-2000:]
