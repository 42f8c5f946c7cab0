"""The end-to-end demo behind `make demo` / `shipyard demo`.

Trains a real scikit-learn model on the breast-cancer data that ships with scikit-learn,
packages it with its evaluation report and reference profile, checks it, registers it,
promotes it with an alias, registers a second version, promotes that, rolls the alias back,
deploys it, serves it over HTTP and answers real requests, rolls out the second version
under the running server, rolls the deployment back in one step, and loads the production
model back from the registry to predict.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console

from shipyard import api
from shipyard.bundle.check import is_fragile
from shipyard.registry.registry import Registry
from shipyard.settings import Settings

OWNER = "Demo Owner <ml-team@example.com>"
THRESHOLDS = {"accuracy": 0.9, "roc_auc": 0.95}


def _train(C: float):  # type: ignore[no-untyped-def]
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer(as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.25, random_state=0, stratify=data.target
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
    model.fit(X_train, y_train)
    return model, X_train, X_test, y_test


def _post(url: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(  # noqa: S310 - the demo's own loopback server
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        return json.loads(response.read()), dict(response.headers)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def _monitored(server_url: str, console: Console, X_test: Any, y_test: Any) -> None:
    """Live traffic with labels as feedback, then what the monitor saw."""
    url = f"{server_url}/v1/deployments/cancer"
    records = X_test.to_dict(orient="records")
    ids = [_post(f"{url}/predict", {"inputs": [row]})[0]["request_id"] for row in records]
    for request_id, label in zip(ids, y_test.tolist(), strict=True):
        _post(f"{url}/feedback", {"request_id": request_id, "label": int(label)})
    time.sleep(1.5)  # the monitor's once-a-second flush
    snap = _get(f"{url}/monitor")
    for variant in snap["variants"]:
        figures = variant["figures"]
        drift = variant["drift"] or {}
        accuracy = next((r["value"] for r in variant["performance"]
                         if r["slice"] == "all" and r["metric"] == "accuracy"), None)
        console.print(
            f"  {variant['model']}:{variant['version']} ({variant['variant']}): "
            f"{figures['requests']:.0f} requests, p99 {figures['latency_p99_ms'] or 0:.1f} ms, "
            f"errors {figures['error_rate'] or 0:.1%}, drift {drift.get('status', '-')} "
            f"over {drift.get('rows', 0)} rows, accuracy on labelled traffic "
            + (f"{accuracy:.3f}" if accuracy is not None else "-")
        )
    console.print(f"  dashboard {server_url}/ui, metrics {server_url}/metrics")


def _serve_roll_out_roll_back(
    settings: Settings, console: Console, X_test: Any, y_test: Any
) -> None:
    """Deploy 1.0.0, serve it over HTTP, roll out 1.1.0, then roll back: all under requests."""
    from shipyard.deploying import deploy_model, rollback
    from shipyard.serving.server import BackgroundServer

    registry = Registry.open(settings)
    try:
        deploy_model(
            registry,
            "cancer",
            "breast-cancer@production",
            owner=OWNER,
            reason="first release",
            serving={"max_batch": 32},
            fallback=None,
        )
    finally:
        registry.close()
    rows = X_test.head(3).to_dict(orient="records")
    with BackgroundServer(settings, ["cancer"]) as server:
        url = f"{server.url}/v1/deployments/cancer/predict"
        console.print(f"[green]serving[/green]  {server.url}  (docs at {server.url}/docs)")

        def ask(label: str, wanted: str) -> None:
            deadline = time.monotonic() + 30
            while True:
                answer, headers = _post(url, {"inputs": rows})
                if answer["model_version"] == wanted or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            console.print(
                f"  {label}: POST {url} -> predictions {answer['predictions']} "
                f"model_version={headers.get('x-model-version')} "
                f"request_id={answer['request_id']}"
            )

        ask("answer", "1.0.0")
        registry = Registry.open(settings)
        try:
            deploy_model(
                registry,
                "cancer",
                "breast-cancer:1.1.0",
                owner=OWNER,
                reason="roll out 1.1.0",
                serving={},
                fallback=None,
            )
            console.print(
                "[green]rolled out[/green] cancer -> breast-cancer:1.1.0 "
                "(loaded and warmed in the background, switched atomically)"
            )
            ask("answer", "1.1.0")
            revision = rollback(registry, "cancer", reason="demo: roll back")
            console.print(
                f"[yellow]rolled back[/yellow] cancer -> revision {revision.number} "
                f"({revision.spec['variants'][0]['model']})"
            )
            ask("answer", "1.0.0")
        finally:
            registry.close()
        console.print("[green]monitored[/green] live traffic with labels as feedback:")
        _monitored(server.url, console, X_test, y_test)


def run(home: Path | None, console: Console) -> None:
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="shipyard-demo-"))
    # The demo's server polls the registry often and keeps its access log quiet.
    settings = Settings.load({"home": home or work / "home", "poll_s": 0.2, "access_log": False})
    console.rule("[bold]shipyard demo")
    console.print(f"registry: {settings.resolved_database_url}")
    console.print(f"store:    {settings.resolved_store_url}")

    bundles = []
    for version, C in (("1.0.0", 1.0), ("1.1.0", 0.1)):
        model, X_train, X_test, y_test = _train(C)
        dest = work / f"breast-cancer-{version}"
        api.package(
            model,
            dest,
            name="breast-cancer",
            version=version,
            owner=OWNER,
            sample=X_train.head(20),
            eval_data=(X_test, y_test.to_numpy()),
            eval_description="breast-cancer hold-out split (25%, stratified, seed 0)",
            thresholds=THRESHOLDS,
            description="Malignant vs benign tumour from 30 cell-nucleus measurements.",
            tags={"dataset": "sklearn.load_breast_cancer"},
        )
        findings = api.check(dest)
        report = api.load(dest).manifest.evaluation
        shown = ", ".join(
            f"{m.name}={m.value:.3f}"
            for m in (report.metrics if report else [])
            if m.name in THRESHOLDS
        )
        console.print(f"[green]packaged[/green] breast-cancer:{version} -> {dest.name}  ({shown})")
        state = "fragile" if is_fragile(findings) else "ready"
        console.print(
            f"[green]checked[/green]  {state}; findings: "
            + (", ".join(sorted({f.code for f in findings})) or "none")
        )
        result = api.push(dest, settings=settings)
        console.print(
            f"[green]pushed[/green]   {result.name}:{result.version} digest {result.digest[:12]}"
        )
        bundles.append((version, X_test, y_test))

    registry = Registry.open(settings)
    try:
        registry.set_alias("breast-cancer", "production", "1.0.0")
        console.print("[green]alias[/green]    breast-cancer@production -> 1.0.0")
        registry.set_alias("breast-cancer", "production", "1.1.0")
        console.print("[green]promoted[/green] breast-cancer@production -> 1.1.0")
        registry.set_alias("breast-cancer", "production", "1.0.0")
        console.print(
            "[yellow]rolled back[/yellow] breast-cancer@production -> 1.0.0 "
            "(previous artifact still in the store: no rebuild)"
        )
    finally:
        registry.close()

    _serve_roll_out_roll_back(settings, console, bundles[0][1], bundles[0][2])

    production = api.load("breast-cancer@production", settings=settings)
    X_test = bundles[0][1]
    labels = production.predict(X_test.head(5))
    proba = production.predict_proba(X_test.head(5))
    console.print(f"[green]loaded[/green]   {production!r} from the registry")
    for i, (label, p) in enumerate(zip(labels, proba, strict=True)):
        console.print(
            f"  row {i}: label={label} ({'benign' if label == 1 else 'malignant'}) "
            f"p(benign)={float(p[1]):.3f}"
        )
    registry = Registry.open(settings)
    try:
        audit = registry.audit(limit=50)
        intact = registry.verify_audit().ok
    finally:
        registry.close()
    console.print(
        f"audit log: {len(audit)} entries ({'chain intact' if intact else 'BROKEN'}),"
        " newest first: " + ", ".join(e.action for e in audit[:6])
    )
    console.print(
        f"done in {time.perf_counter() - started:.1f}s. Try: shipyard --home {settings.home} list"
    )
