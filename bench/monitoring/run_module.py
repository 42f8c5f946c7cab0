"""bench/monitoring/run.py loaded as a module, for the diagnostics beside it (profile.py,
shared_core.py): its configurations, preparation, server start and wrk helpers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load_run() -> Any:
    spec = importlib.util.spec_from_file_location("monitoring_run", HERE / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
