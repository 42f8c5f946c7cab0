"""The server process tunes the cyclic collector; a background server in a caller's process
leaves the caller's collector alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from shipyard.serving.server import YOUNG_COLLECTION_EVERY

# In a child process: `serve` as the CLI calls it, up to the point where uvicorn would take
# over (uvicorn.run is replaced to report the collector's thresholds and return).
SERVE = """
import gc, json, sys
import uvicorn
from shipyard.serving import server
from shipyard.settings import Settings
before = gc.get_threshold()
uvicorn.run = lambda *a, **k: print(json.dumps({"before": before, "after": gc.get_threshold()}))
server.serve(Settings.load({"home": sys.argv[1]}), [], host="127.0.0.1", port=0)
"""


def test_serve_raises_the_young_threshold_and_keeps_the_older_ones(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SERVE, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["after"][0] == YOUNG_COLLECTION_EVERY != seen["before"][0]
    assert seen["after"][1:] == seen["before"][1:]


def test_a_background_server_leaves_its_callers_collector_alone(tmp_path: Path) -> None:
    probe = """
import gc, sys
from shipyard.serving.server import BackgroundServer
from shipyard.settings import Settings
before = gc.get_threshold()
BackgroundServer(Settings.load({"home": sys.argv[1]}))  # builds the whole app
print(gc.get_threshold() == before)
"""
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "True"
