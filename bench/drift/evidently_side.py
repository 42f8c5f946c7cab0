"""Evidently's side of bench/drift/run.py; runs inside Evidently's own virtual environment.

    <evidently venv>/bin/python evidently_side.py REFERENCE.npy CURRENT.npy

Loads both arrays as DataFrames (columns f0, f1, ...), times `Report([DataDriftPreset()]).run`
(Evidently's data drift report with its defaults) and prints one JSON line: seconds, the
columns it calls drifted, and the Evidently version.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd


def main() -> None:
    import evidently
    from evidently import Report
    from evidently.presets import DataDriftPreset

    reference, current = (np.load(path, mmap_mode="r") for path in sys.argv[1:3])
    columns = [f"f{i}" for i in range(reference.shape[1])]
    ref = pd.DataFrame(np.asarray(reference), columns=columns)
    cur = pd.DataFrame(np.asarray(current), columns=columns)
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(cur, ref)
    result = snapshot.dict()
    seconds = time.perf_counter() - started
    drifted = []
    for metric in result["metrics"]:
        config = metric.get("config", {})
        # Distance methods (the default for big numeric columns) drift at value >= threshold.
        if config.get("type", "").endswith("ValueDrift") and float(metric["value"]) >= float(
            config["threshold"]
        ):
            drifted.append(config["column"])
    print(json.dumps({"seconds": seconds, "drifted": drifted, "version": evidently.__version__}))


if __name__ == "__main__":
    main()
