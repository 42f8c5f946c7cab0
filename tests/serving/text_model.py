"""A plain-Python text model for serving tests: answers the length of each text."""

from __future__ import annotations

import numpy as np
import pandas as pd


class TextLength:
    def load(self, folder: object) -> None:
        pass

    def predict(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        return {"prediction": np.array([len(t) for t in batch["text"]], dtype=np.int64)}


class Echo:
    """Answers each text back: a stand-in for a language model whose output is text."""

    def load(self, folder: object) -> None:
        pass

    def predict(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        return {"reply": np.array(list(batch["text"]), dtype=object)}
