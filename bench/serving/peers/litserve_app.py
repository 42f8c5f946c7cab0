"""LitServe peer: a LitAPI with one inference worker and no batching (LitServe's defaults).

LitServe runs the HTTP server (uvicorn) and the model in separate processes joined by queues.

    python litserve_app.py --port P --model MODEL.joblib
"""

from __future__ import annotations

import argparse

import joblib
import litserve as ls
import numpy as np


class BenchAPI(ls.LitAPI):
    def __init__(self, model_path: str) -> None:
        super().__init__(max_batch_size=1)
        self.model_path = model_path

    def setup(self, device: str) -> None:
        self.model = joblib.load(self.model_path)

    def decode_request(self, request: dict) -> np.ndarray:
        return np.asarray(request["inputs"], dtype=np.float64)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(rows)

    def encode_response(self, proba: np.ndarray) -> dict:
        return {"label": self.model.classes_[proba.argmax(axis=1)].tolist(),
                "probabilities": proba.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    server = ls.LitServer(BenchAPI(args.model), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, log_level="warning",
               generate_client_file=False)


if __name__ == "__main__":
    main()
