"""The README's quickstart runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_quickstart_python_and_shell_blocks_run(tmp_path: Path):
    env = {**os.environ, "SHIPYARD_HOME": str(tmp_path / "home")}
    package, load = blocks("python")[0], blocks("python")[1]
    subprocess.run([sys.executable, "-c", package], cwd=tmp_path, env=env, check=True,
                   timeout=120)
    shell = blocks("bash")[1]
    for line in shell.splitlines():
        command = line.split("#")[0].strip()
        if not command.startswith("shipyard "):
            continue
        args = command.split()[1:]
        if args[0] == "pull":
            args[-1] = str(tmp_path / "pulled")
        proc = subprocess.run([sys.executable, "-m", "shipyard.cli", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
    setup = "from sklearn.datasets import load_breast_cancer\n" \
            "X = load_breast_cancer(as_frame=True).data\nimport shipyard\n"
    subprocess.run([sys.executable, "-c", setup + load], cwd=tmp_path, env=env, check=True,
                   timeout=120)
