"""How to start, call and check each server in the benchmark.

A `Server` says which virtual environment it runs in, how to prepare its files once (a saved
MLflow model, a shipyard home), the command that starts it on a given port, the request it
gets, and how to read the label and probabilities out of its answer (so that a server that
answers 200 with the wrong thing is caught, not timed).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
ROOT = HERE.parents[1]
MAIN_VENV = ROOT / ".venv"


@dataclass
class Context:
    workdir: Path          # scratch folder of this run
    model: Path            # the joblib file
    row: list[float]       # the request row
    peers_dir: Path        # where setup_peers.sh puts the peer venvs

    def venv(self, peer: str) -> Path:
        return MAIN_VENV if peer == "main" else self.peers_dir / peer / "venv"


Parse = Callable[[Any], tuple[int, list[float]]]


def find_key(data: Any, key: str) -> Any:
    """The first value under `key` anywhere in nested dicts and lists (None when absent)."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        data = list(data.values())
    if isinstance(data, list):
        for item in data:
            found = find_key(item, key)
            if found is not None:
                return found
    return None


def parse_labelled(data: Any) -> tuple[int, list[float]]:
    """Answers holding "label" (or "predictions") and "probabilities" keys, at any depth."""
    label, proba = find_key(data, "label"), find_key(data, "probabilities")
    if label is None:
        label = find_key(data, "predictions")
    if isinstance(proba, dict):          # {"0": p0, "1": p1}
        proba = [proba[k] for k in sorted(proba)]
    while isinstance(proba, list) and proba and isinstance(proba[0], list):
        proba = proba[0]
    while isinstance(label, list):
        label = label[0]
    return int(label), [float(p) for p in proba]


def parse_mlflow(data: Any) -> tuple[int, list[float]]:
    proba = [float(p) for p in data["predictions"][0]]
    return max(range(len(proba)), key=proba.__getitem__), proba


def parse_v2(data: Any) -> tuple[int, list[float]]:
    outputs = {o["name"]: o["data"] for o in data["outputs"]}
    return int(outputs["predict"][0]), [float(p) for p in outputs["predict_proba"]]


@dataclass
class Server:
    name: str
    venv: str                                    # a setup_peers.sh peer, or "main"
    package: str                                 # the distribution whose version is reported
    command: Callable[[Context, int], list[str]]
    path: str
    body: Callable[[Context], bytes]
    parse: Parse = parse_labelled
    prepare: Callable[[Context], None] | None = None
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""


def rows_body(ctx: Context) -> bytes:
    return json.dumps({"inputs": [ctx.row]}).encode()


def python(ctx: Context, peer: str, script: str, port: int) -> list[str]:
    return [str(ctx.venv(peer) / "bin" / "python"), str(PEERS / script),
            "--port", str(port), "--model", str(ctx.model)]


# --- MLServer --------------------------------------------------------------------------------

def mlserver_command(ctx: Context, port: int) -> list[str]:
    folder = ctx.workdir / f"mlserver-{port}"
    (folder / "bench").mkdir(parents=True, exist_ok=True)
    # gRPC and metrics need ports too: the two above the HTTP one (run.py leaves them free).
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": port + 1, "metrics_port": port + 2,
        "parallel_workers": 1}))
    (folder / "bench" / "model-settings.json").write_text(json.dumps({
        "name": "bench", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(ctx.model)}}))
    return [str(ctx.venv("mlserver") / "bin" / "mlserver"), "start", str(folder)]


def v2_body(ctx: Context) -> bytes:
    return json.dumps({
        "inputs": [{"name": "input-0", "shape": [1, 30], "datatype": "FP64", "data": ctx.row}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}).encode()


# --- MLflow ----------------------------------------------------------------------------------

def mlflow_prepare(ctx: Context) -> None:
    subprocess.run([str(ctx.venv("mlflow") / "bin" / "python"), str(PEERS / "mlflow_save.py"),
                    str(ctx.model), str(ctx.workdir / "mlflow-model")],
                   check=True, capture_output=True, timeout=600)


def mlflow_command(ctx: Context, port: int) -> list[str]:
    return [str(ctx.venv("mlflow") / "bin" / "mlflow"), "models", "serve",
            "-m", str(ctx.workdir / "mlflow-model"), "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port), "-w", "1"]


# --- shipyard --------------------------------------------------------------------------------

def shipyard_home(ctx: Context, max_batch: int) -> Path:
    return ctx.workdir / f"shipyard-home-b{max_batch}"


def shipyard_prepare(max_batch: int) -> Callable[[Context], None]:
    def prepare(ctx: Context) -> None:
        done = subprocess.run([str(MAIN_VENV / "bin" / "python"),
                               str(PEERS / "shipyard_prepare.py"),
                               str(shipyard_home(ctx, max_batch)), str(max_batch)],
                              capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"shipyard_prepare.py failed: {done.stderr[-2000:]}")
    return prepare


def shipyard_command(max_batch: int) -> Callable[[Context, int], list[str]]:
    def command(ctx: Context, port: int) -> list[str]:
        return [str(MAIN_VENV / "bin" / "shipyard"), "--home", str(shipyard_home(ctx, max_batch)),
                "serve", "--port", str(port), "bench"]
    return command


def shipyard_body(ctx: Context) -> bytes:
    return json.dumps({"inputs": [{"input": ctx.row}]}).encode()


SERVERS: dict[str, Server] = {s.name: s for s in [
    Server("floor", "floor", "uvicorn", lambda c, p: python(c, "floor", "floor.py", p),
           "/", rows_body,
           note="raw ASGI callable, uvicorn + httptools + uvloop, no access log"),
    Server("floor@shipyard-venv", "main", "uvicorn", lambda c, p: python(c, "main", "floor.py", p),
           "/", rows_body,
           note="diagnostic, not a peer: the floor's code run from shipyard's venv, where pandas "
                "and pyarrow are installed (scikit-learn imports pandas whenever it can): what "
                "the environment alone costs"),
    Server("fastapi", "fastapi", "fastapi",
           lambda c, p: python(c, "fastapi", "fastapi_app.py", p), "/predict", rows_body,
           note="async route, pydantic body model, uvicorn + httptools + uvloop"),
    Server("bentoml", "bentoml", "bentoml",
           lambda c, p: [str(c.venv("bentoml") / "bin" / "bentoml"), "serve",
                         "bentoml_service:Bench", "--host", "127.0.0.1", "--port", str(p)],
           "/predict", rows_body, cwd=PEERS,
           note="@bentoml.service, 1 worker, `bentoml serve`"),
    Server("litserve", "litserve", "litserve",
           lambda c, p: python(c, "litserve", "litserve_app.py", p), "/predict", rows_body,
           note="LitAPI, 1 worker, no batching"),
    Server("mlserver", "mlserver", "mlserver", mlserver_command, "/v2/models/bench/infer",
           v2_body, parse=parse_v2,
           note="mlserver-sklearn runtime, V2 infer, [1,30] FP64, 1 parallel worker"),
    Server("mlflow", "mlflow", "mlflow", mlflow_command, "/invocations", rows_body,
           parse=parse_mlflow, prepare=mlflow_prepare,
           note="`mlflow models serve --env-manager local -w 1`, pyfunc predict_fn=predict_proba"),
    Server("shipyard", "main", "shipyard", shipyard_command(1),
           "/v1/deployments/bench/predict", shipyard_body, prepare=shipyard_prepare(1),
           note="`shipyard serve`, deploy --max-batch 1 (validation, routing, monitoring on)"),
    Server("shipyard+batching", "main", "shipyard", shipyard_command(64),
           "/v1/deployments/bench/predict", shipyard_body, prepare=shipyard_prepare(64),
           note="`shipyard serve`, deploy --max-batch 64 (adaptive batching)"),
    Server("lean-http", "floor", "httptools",
           lambda c, p: python(c, "floor", "lean_http.py", p), "/", rows_body,
           note="diagnostic, not a peer (not run by default): the floor's handler on a "
                "hand-written httptools protocol, no ASGI, predict inline"),
    Server("lean-http+thread", "floor", "httptools",
           lambda c, p: [*python(c, "floor", "lean_http.py", p), "--thread"], "/", rows_body,
           note="diagnostic, not a peer (not run by default): the same with predict on a "
                "worker thread, handed over as shipyard's batcher does"),
]}
# What --peers runs unless named: the diagnostics above that answer a one-off question are not.
DEFAULT_SERVERS = [name for name in SERVERS if not name.startswith("lean-http")]
