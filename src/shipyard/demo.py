"""The end-to-end demo behind `make demo` / `shipyard demo`.

Trains a real scikit-learn model on the breast-cancer data that ships with scikit-learn,
packages it with its evaluation report and reference profile, checks it, registers it,
promotes it with an alias, registers a second version, promotes that, rolls the alias back,
and loads the production model back from the registry to predict.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

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
        data.data, data.target, test_size=0.25, random_state=0, stratify=data.target)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
    model.fit(X_train, y_train)
    return model, X_train, X_test, y_test


def run(home: Path | None, console: Console) -> None:
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="shipyard-demo-"))
    settings = Settings.load({"home": home or work / "home"})
    console.rule("[bold]shipyard demo")
    console.print(f"registry: {settings.resolved_database_url}")
    console.print(f"store:    {settings.resolved_store_url}")

    bundles = []
    for version, C in (("1.0.0", 1.0), ("1.1.0", 0.1)):
        model, X_train, X_test, y_test = _train(C)
        dest = work / f"breast-cancer-{version}"
        api.package(model, dest, name="breast-cancer", version=version, owner=OWNER,
                    sample=X_train.head(20), eval_data=(X_test, y_test.to_numpy()),
                    eval_description="breast-cancer hold-out split (25%, stratified, seed 0)",
                    thresholds=THRESHOLDS,
                    description="Malignant vs benign tumour from 30 cell-nucleus measurements.",
                    tags={"dataset": "sklearn.load_breast_cancer"})
        findings = api.check(dest)
        report = api.load(dest).manifest.evaluation
        shown = ", ".join(f"{m.name}={m.value:.3f}" for m in (report.metrics if report else [])
                          if m.name in THRESHOLDS)
        console.print(f"[green]packaged[/green] breast-cancer:{version} -> {dest.name}  ({shown})")
        state = "fragile" if is_fragile(findings) else "ready"
        console.print(f"[green]checked[/green]  {state}; findings: "
                      + (", ".join(sorted({f.code for f in findings})) or "none"))
        result = api.push(dest, settings=settings)
        console.print(f"[green]pushed[/green]   {result.name}:{result.version} "
                      f"digest {result.digest[:12]}")
        bundles.append((version, X_test))

    registry = Registry.open(settings)
    try:
        registry.set_alias("breast-cancer", "production", "1.0.0")
        console.print("[green]alias[/green]    breast-cancer@production -> 1.0.0")
        registry.set_alias("breast-cancer", "production", "1.1.0")
        console.print("[green]promoted[/green] breast-cancer@production -> 1.1.0")
        registry.set_alias("breast-cancer", "production", "1.0.0")
        console.print("[yellow]rolled back[/yellow] breast-cancer@production -> 1.0.0 "
                      "(previous artifact still in the store: no rebuild)")
        audit = registry.audit(limit=20)
    finally:
        registry.close()

    production = api.load("breast-cancer@production", settings=settings)
    X_test = bundles[0][1]
    labels = production.predict(X_test.head(5))
    proba = production.predict_proba(X_test.head(5))
    console.print(f"[green]loaded[/green]   {production!r} from the registry")
    for i, (label, p) in enumerate(zip(labels, proba, strict=True)):
        console.print(f"  row {i}: label={label} ({'benign' if label == 1 else 'malignant'}) "
                      f"p(benign)={float(p[1]):.3f}")
    console.print(f"audit log: {len(audit)} entries, latest: "
                  + ", ".join(e.action for e in audit[:4]))
    console.print(f"done in {time.perf_counter() - started:.1f}s. Try: "
                  f"shipyard --home {settings.home} list")
