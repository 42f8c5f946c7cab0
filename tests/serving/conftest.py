"""A real server process shared by the serving tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from serving_harness import Models, Server, _package_all, cli, start_server


@pytest.fixture(scope="session")
def models(
    tmp_path_factory: pytest.TempPathFactory,
    packaged: Path,
    mixed_data: tuple[pd.DataFrame, np.ndarray],
) -> Models:
    home = tmp_path_factory.mktemp("serving-home")
    work = tmp_path_factory.mktemp("serving-bundles")
    found = _package_all(home, work, packaged)
    found.frame = mixed_data[0]
    cli(home, "deploy", "cancer", "--model", "cancer:1")
    cli(home, "deploy", "tumours", "--model", "tumours:1.0.0", "--max-rows", "100")
    cli(home, "deploy", "texts", "--model", "texts:1")
    cli(
        home,
        "deploy",
        "sleepy",
        "--model",
        "sleepy:1",
        "--timeout-ms",
        "300",
        "--max-inflight",
        "4",
        "--fallback",
        'static:{"prediction": -1}',
    )
    return found


@pytest.fixture(scope="session")
def server(models: Models) -> Iterator[Server]:
    """One server process shared by every test that only reads."""
    running = start_server(
        models.home,
        "cancer",
        "tumours",
        "sleepy",
        "texts",
        env={"SHIPYARD_BODY_TIMEOUT_S": "2", "SHIPYARD_MAX_BODY_BYTES": str(4 * 1024 * 1024)},
    )
    yield running
    running.stop()
