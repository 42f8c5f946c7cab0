"""What one prediction record costs the process: submit -> stored, per backend and input layout.

    .venv/bin/python bench/monitoring/records_micro.py [--records 20000] [--repeat 3]
        [--backends sqlite,parquet,postgres] [--cases array,frame,frame+hash]
        [--path answered|submit] [--json PATH]

Each case hands `--records` records to a fresh `RecordWriter` (the server's defaults:
interval, batch size) on a fresh store, then flushes. `--path answered` (the default) hands
them over as the server's monitor does, as finished requests in one `submit_answered` per
HANDOFF of them (about a second of traffic per variant); `--path submit` one
`PredictionRecord` per `submit`. Reported per record, best of `--repeat`:

- **submit us**: the hot path alone (what the submitting thread pays);
- **CPU us**: this process's CPU time (all threads: submit, the writer thread's conversion,
  serialisation and the driver's insert) from the first submit until the flush returned;
  on one core this is what the writer takes from serving;
- **wall us**: the same interval in wall-clock time.

PostgreSQL's own server process is not counted (it runs elsewhere in production too).
Cases: **array** is bench/serving's request (one row of 30 floats; array layout, outputs
`label` and `probabilities` as the server slices them); **frame** is a 30-column DataFrame
row with a string column; **frame+hash** the same with that column hashed by the redaction
policy (the path that converts every value).

PostgreSQL is taken from SHIPYARD_TEST_POSTGRES_URL (default the tests' server); skipped
when unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shipyard.monitoring.monitor import scrubbed
from shipyard.monitoring.records import Answered, PredictionRecord, RecordWriter
from shipyard.monitoring.recordstore import RecordStore
from shipyard.registry.database import Database
from shipyard.routing import RecordsConfig
from shipyard.serving.online import new_request_id

POSTGRES_URL = os.environ.get("SHIPYARD_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
KEY = b"k" * 32
CASES = ("array", "frame", "frame+hash")
HANDOFF = 1000  # finished requests per submit_answered: about a second of a variant's traffic


def make_records(case: str, n: int, seed: int = 0) -> list[PredictionRecord]:
    """`n` records of the case's layout; each request's batch and outputs are its own."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 30)) * 100
    X = np.round(X, 4)  # about the width of the breast-cancer features' text
    probabilities = rng.random((n, 2))
    labels = probabilities.argmax(axis=1)
    now = time.time()
    records = []
    names = [f"f{i}" for i in range(30)]
    for i in range(n):
        if case == "array":
            batch: Any = X[i:i + 1].copy()  # to_batch makes each request's array its own
        else:
            batch = pd.DataFrame({**{name: [X[i, j]] for j, name in enumerate(names)},
                                  "email": [f"user{i}@example.com"]})
        outputs = {"label": labels[i:i + 1], "probabilities": probabilities[i:i + 1]}
        records.append(PredictionRecord.from_batch(
            request_id=new_request_id(now + i * 1e-4), time=now + i * 1e-4, deployment="bench",
            variant="main", model="bench", version="1", batch=batch, outputs=outputs,
            latency_ms=0.5 + i % 7,
        ))
    return records


def open_store(backend: str, folder: Path) -> tuple[RecordStore, Any]:
    """A fresh store; returns it with a cleanup callable."""
    if backend == "postgres":
        schema = f"records_micro_{uuid.uuid4().hex[:12]}"
        admin = create_engine(POSTGRES_URL)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        database = Database(url.render_as_string(hide_password=False), timeout_s=10)

        def cleanup() -> None:
            database.close()
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

        return RecordStore(database), cleanup
    folder.mkdir(parents=True, exist_ok=True)
    database = Database(f"sqlite:///{folder / 'registry.db'}", timeout_s=10)
    parquet = folder / "records" if backend == "parquet" else None
    return RecordStore(database, parquet_dir=parquet), database.close


def postgres_reachable() -> bool:
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def as_answered(records: list[PredictionRecord]) -> list[Answered]:
    """The records as the monitor's flush hands them over: finished requests, HANDOFF a go."""
    text_inputs = not isinstance(records[0].inputs, np.ndarray)
    handoffs = []
    for start in range(0, len(records), HANDOFF):
        part = records[start:start + HANDOFF]
        handoffs.append(Answered(
            "bench", "main", "bench", "1", [r.request_id for r in part],
            np.array([r.time for r in part]), np.array([r.latency_ms for r in part]),
            [r.inputs for r in part], [r.outputs for r in part], [None] * len(part),
            scrubbed, text_inputs))
    return handoffs


def measure(backend: str, case: str, n: int, folder: Path,
            path: str = "answered") -> dict[str, float]:
    records = make_records(case, n)
    handoffs = as_answered(records) if path == "answered" else []
    store, cleanup = open_store(backend, folder)
    config = RecordsConfig(redact={"email": "hash"} if case == "frame+hash" else {})
    try:
        writer = RecordWriter(store, config, deployment="bench", key=KEY, purge_every_s=None)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if path == "answered":
            for answered in handoffs:
                writer.submit_answered(answered)
        else:
            for record in records:
                writer.submit(record)
        submitted = time.perf_counter()
        if not writer.flush(600):
            raise RuntimeError("flush timed out")
        cpu1, wall1 = time.process_time(), time.perf_counter()
        writer.close()
        stored = len(store.records("bench", columns=["request_id"])["request_id"].unique())
        if writer.stats.written != n or stored != n:
            raise RuntimeError(f"{backend}/{case}: wrote {writer.stats.written}, "
                               f"stored {stored} of {n}")
    finally:
        cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    return {"submit_us": (submitted - wall0) / n * 1e6,
            "cpu_us": (cpu1 - cpu0) / n * 1e6,
            "wall_us": (wall1 - wall0) / n * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,parquet,postgres")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--path", choices=("answered", "submit"), default="answered")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    if "postgres" in backends and not postgres_reachable():
        print(f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string(hide_password=True)} "
              "is unreachable: skipped", file=sys.stderr)
        backends.remove("postgres")
    results: list[dict[str, Any]] = []
    print(f"{'backend':9} {'case':11} {'submit us':>9} {'CPU us':>8} {'wall us':>8}")
    with tempfile.TemporaryDirectory(prefix="records-micro-") as tmp:
        for backend in backends:
            for case in args.cases.split(","):
                runs = [measure(backend, case, args.records, Path(tmp) / f"{backend}-{k}",
                                args.path)
                        for k in range(args.repeat)]
                best = {key: min(r[key] for r in runs) for key in runs[0]}
                results.append({"backend": backend, "case": case, **best})
                print(f"{backend:9} {case:11} {best['submit_us']:9.2f} {best['cpu_us']:8.1f} "
                      f"{best['wall_us']:8.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"records": args.records, "path": args.path,
                                         "results": results},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
