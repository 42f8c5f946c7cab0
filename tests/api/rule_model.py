"""A plain-Python model: flags rows whose petal length passes a threshold kept in JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


class PetalRule:
    def __init__(self) -> None:
        self.threshold = 2.5

    def save(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "rule.json").write_text(json.dumps({"threshold": self.threshold}))

    def load(self, folder: Path) -> None:
        self.threshold = json.loads((Path(folder) / "rule.json").read_text())["threshold"]

    def predict(self, batch: pd.DataFrame) -> np.ndarray:
        return (batch["petal_length"].to_numpy() > self.threshold).astype(np.int64)
