"""A plain-Python model for serving tests: sleeps `delay` seconds, fails when `delay` < 0."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd


class SleepyModel:
    def load(self, folder: object) -> None:
        pass

    def predict(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        delays = batch["delay"].to_numpy(dtype=float)
        if (delays < 0).any():
            raise RuntimeError("asked to fail")
        time.sleep(float(delays.max()))
        return {"prediction": delays * 2}
