"""FastAPI peer: a pydantic body model (30 floats per row) and the same predict_proba call.

Idiomatic FastAPI: an `async def` route (the faster choice for a ~0.3 ms model; a plain `def`
route would add a thread hop), a pydantic request model, the default JSON response.

    python fastapi_app.py --port P --model MODEL.joblib
"""

from __future__ import annotations

import argparse
from typing import Annotated

import joblib
import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field

Row = Annotated[list[float], Field(min_length=30, max_length=30)]


class PredictRequest(BaseModel):
    inputs: list[Row] = Field(min_length=1)


class PredictResponse(BaseModel):
    label: list[int]
    probabilities: list[list[float]]


def build(model_path: str) -> FastAPI:
    model = joblib.load(model_path)
    app = FastAPI()

    @app.post("/predict", response_model=PredictResponse)
    async def predict(request: PredictRequest) -> PredictResponse:
        proba = model.predict_proba(np.asarray(request.inputs, dtype=np.float64))
        return PredictResponse(label=model.classes_[proba.argmax(axis=1)].tolist(),
                               probabilities=proba.tolist())

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    uvicorn.run(build(args.model), host="127.0.0.1", port=args.port, loop="uvloop",
                http="httptools", access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
