"""The end-to-end demo behind `make demo` / `shipyard demo`.

Trains a real scikit-learn model on the breast-cancer data that ships with scikit-learn,
packages it with its evaluation report and reference profile, checks it, registers it,
promotes it with an alias, registers a second version, promotes that, rolls the alias back,
deploys it, serves it over HTTP and answers real requests, rolls out the second version
under the running server, rolls the deployment back in one step, and watches labelled live
traffic. Then two canaries under the server's rollout controller: a deliberately worse
version (trained on shuffled labels) that the controller rolls back on its own, printed with
the evidence behind the decision, and a good version that it promotes to all traffic. Last,
it loads the production model back from the registry to predict.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from shipyard import api
from shipyard.bundle.check import is_fragile
from shipyard.registry.registry import Registry
from shipyard.settings import Settings

OWNER = "Demo Owner <ml-team@example.com>"
THRESHOLDS = {"accuracy": 0.9, "roc_auc": 0.95}


CANARY_PLAN: dict[str, Any] = {
    "strategy": "canary",
    "interval_s": 1,
    "steps": [{"weight": 50, "wait_for_labels": 25, "min_samples": 25}, {"weight": 100}],
    "rules": [{"name": "accuracy", "metric": "accuracy", "op": ">=", "threshold": 0.85,
               "min_samples": 25}],
}
FINISHED = ("promoted", "rolled_back", "aborted")


def _train(C: float, *, shuffle_labels: bool = False):  # type: ignore[no-untyped-def]
    import numpy as np
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
    labels = np.random.default_rng(0).permutation(y_train) if shuffle_labels else y_train
    model.fit(X_train, labels)
    return model, X_train, X_test, y_test


def _package(
    settings: Settings, console: Console, work: Path, version: str, C: float, *,
    shuffle_labels: bool = False,
) -> tuple[Any, Any]:
    """Train, package with its evaluation, check and push one version; its hold-out split."""
    model, X_train, X_test, y_test = _train(C, shuffle_labels=shuffle_labels)
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
    fragile = is_fragile(findings)
    console.print(
        f"[green]checked[/green]  {'[red]fragile[/red]' if fragile else 'ready'}; findings: "
        + (", ".join(sorted({f.code for f in findings})) or "none")
    )
    # Only the deliberately bad version is let through a failed check: the canary's catch.
    result = api.push(dest, settings=settings, allow_fragile=shuffle_labels)
    console.print(
        f"[green]pushed[/green]   {result.name}:{result.version} digest {result.digest[:12]}"
        + ("  (--allow-fragile: let it through, so the canary has something to catch)"
           if fragile and shuffle_labels else "")
    )
    return X_test, y_test


def _post(url: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(  # noqa: S310 - the demo's own loopback server
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        return json.loads(response.read()), dict(response.headers)


def _label(url: str, request_id: str, label: int) -> None:
    """Send one label as feedback. A label that follows its answer within milliseconds can
    find the record still on its way to the store (the monitor flushes in the background):
    the server answers 404 then, so try again a moment later."""
    for attempt in range(10):
        try:
            _post(f"{url}/feedback", {"request_id": request_id, "label": label})
            return
        except urllib.error.HTTPError as exc:
            if exc.code != 404 or attempt == 9:
                raise
            time.sleep(0.2)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def _monitored(server_url: str, console: Console, X_test: Any, y_test: Any) -> None:
    """Live traffic with labels as feedback, then what the monitor saw."""
    url = f"{server_url}/v1/deployments/cancer"
    records = X_test.to_dict(orient="records")
    ids = [_post(f"{url}/predict", {"inputs": [row]})[0]["request_id"] for row in records]
    for request_id, label in zip(ids, y_test.tolist(), strict=True):
        _label(url, request_id, int(label))
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
    settings: Settings, console: Console, work: Path, X_test: Any, y_test: Any
) -> None:
    """Deploy 1.0.0, serve it over HTTP, roll out 1.1.0, then roll back: all under requests.
    Then the canaries: a bad version rolled back on its own, a good one promoted."""
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

        console.rule("[bold]two canaries in one run: a bad version, then a good one")
        console.print("[bold]1. a bad version[/bold]: trained on shuffled labels, "
                      "a deliberate regression")
        _package(settings, console, work, "1.2.0", 1.0, shuffle_labels=True)
        _canary(settings, console, server.url, "breast-cancer:1.2.0", X_test, y_test)
        ask("answer", "1.0.0")
        console.print("[bold]2. a good version[/bold]: the same recipe as 1.0.0, "
                      "a little less regularised")
        _package(settings, console, work, "1.3.0", 2.0)
        _canary(settings, console, server.url, "breast-cancer:1.3.0", X_test, y_test)
        ask("answer", "1.3.0")


def _timeline(plan: Any, decisions: list[Any]) -> list[str]:
    """One line per evaluation: the step, its outcome, and what each check measured."""
    lines = []
    start = decisions[0].at.timestamp() if decisions else 0.0
    for at in dict.fromkeys(d.at for d in decisions):
        rows = [d for d in decisions if d.at == at]
        summary = next((d for d in rows if d.rule == "decision"), rows[-1])
        checks = []
        for d in rows:
            if d.rule == "decision":
                continue
            if d.rule == "sample_ratio":
                shown = ", ".join(f"{k} {v}" for k, v in sorted((d.samples or {}).items()))
                checks.append(f"split {d.outcome} ({shown})")
            else:
                value = (d.measured or {}).get("value")
                n = (d.samples or {}).get("candidate")
                figure = f"{value:.3f} over {n}" if value is not None else f"{n} samples"
                checks.append(f"{d.rule} {d.outcome} ({figure})")
        weight = plan.steps[summary.step].weight if summary.step is not None else None
        where = f"step {summary.step} at {weight:g}%" if weight is not None else "step ?"
        lines.append(f"t+{at.timestamp() - start:.1f}s {where}: {summary.outcome}; "
                     + "; ".join(checks))
    return lines


def _canary(
    settings: Settings, console: Console, server_url: str, model: str, X_test: Any, y_test: Any
) -> None:
    """Start a canary of `model` on the demo's deployment, send labelled traffic until the
    server's rollout controller decides, then print the decision, its evidence and what
    serves now."""
    from collections import Counter

    from shipyard.rollout import RolloutPlan, explain, manage

    plan = RolloutPlan.parse({**CANARY_PLAN, "model": model})
    url = f"{server_url}/v1/deployments/cancer"
    # The controller logs its decisions; the demo prints them with their evidence instead.
    controller_log = logging.getLogger("shipyard.rollout")
    level = controller_log.level
    controller_log.setLevel(logging.ERROR)
    registry = Registry.open(settings)
    try:
        record = manage.start(registry, "cancer", plan, actor=OWNER,
                              reason=f"demo: canary of {model}")
        console.print(
            f"[green]canary[/green]   rollout {record.id}: {model} takes 50% of cancer's "
            "traffic, then 100%; rule accuracy >= 0.85 on labelled traffic (25 labels "
            "per arm first); the server's controller judges it every second"
        )
        # Traffic starts once this server serves the canary's revision: requests answered
        # under the old split just before the switch would count against the new one.
        wanted = registry.current_revision("cancer").number
        deadline = time.monotonic() + 30
        while _get(url)["revision"] < wanted and time.monotonic() < deadline:
            time.sleep(0.05)
        rows = X_test.to_dict(orient="records")
        labels = [int(label) for label in y_test.tolist()]
        seen: Counter[str] = Counter()
        started = time.monotonic()
        sent = 0
        while True:
            for _ in range(20):  # one labelled request at a time, as live traffic comes
                i = sent % len(rows)
                answer, headers = _post(f"{url}/predict", {"inputs": [rows[i]]})
                seen[str(headers.get("x-model-version"))] += 1
                _label(url, answer["request_id"], labels[i])
                sent += 1
            record = registry.rollouts("cancer")[-1]
            if record.status in FINISHED or time.monotonic() - started > 45:
                break
        took = time.monotonic() - started
        console.print(
            f"  sent {sent} labelled requests in {took:.1f}s ("
            + ", ".join(f"{v}: {n}" for v, n in sorted(seen.items())) + ")"
        )
        status = record.status.replace("_", " ")
        colour = {"promoted": "green", "rolled_back": "yellow"}.get(record.status, "red")
        console.print(
            (f"[{colour}]{status}[/{colour}] by the controller, on its own"
             if record.status in FINISHED else f"[red]still {status}[/red] after {took:.0f}s")
            + "; the decision and its evidence (as `shipyard rollout explain cancer`):"
        )
        decisions = list(reversed(registry.decisions(record.id, limit=500)))
        for line in explain(decisions).splitlines():
            console.print(f"  {escape(line)}")
        console.print("  every evaluation, once a second:")
        for line in _timeline(plan, decisions):
            console.print(f"    {escape(line)}")
        revision = registry.current_revision("cancer")
        served = ", ".join(f"{v['model']} {v.get('weight', 100):g}%"
                           for v in revision.spec["variants"])
        console.print(f"  cancer now serves revision {revision.number}: {served}")
        if record.status == "promoted":
            version = model.split(":", 1)[1]
            registry.set_alias("breast-cancer", "production", version)
            console.print(f"[green]alias[/green]    breast-cancer@production -> {version} "
                          "(follows the promotion)")
    finally:
        registry.close()
        controller_log.setLevel(level)


def run(home: Path | None, console: Console) -> None:
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="shipyard-demo-"))
    # The demo's server polls the registry often and keeps its access log quiet.
    settings = Settings.load({"home": home or work / "home", "poll_s": 0.2, "access_log": False})
    console.rule("[bold]shipyard demo")
    console.print(f"registry: {settings.resolved_database_url}")
    console.print(f"store:    {settings.resolved_store_url}")

    bundles = [_package(settings, console, work, version, C)
               for version, C in (("1.0.0", 1.0), ("1.1.0", 0.1))]

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

    X_test, y_test = bundles[0]
    _serve_roll_out_roll_back(settings, console, work, X_test, y_test)

    production = api.load("breast-cancer@production", settings=settings)
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
