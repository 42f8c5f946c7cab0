"""Save the benchmark pipeline as an MLflow model (run in the mlflow venv).

    python mlflow_save.py MODEL.joblib DEST

`mlflow.sklearn.save_model` with `pyfunc_predict_fn="predict_proba"`, so that the pyfunc
server's /invocations answers the probabilities (the label is their argmax).
"""

from __future__ import annotations

import shutil
import sys

import joblib
import mlflow.sklearn

model = joblib.load(sys.argv[1])
shutil.rmtree(sys.argv[2], ignore_errors=True)
mlflow.sklearn.save_model(model, sys.argv[2], pyfunc_predict_fn="predict_proba")
