"""The Grafana dashboard is valid JSON whose queries name only series that metrics.py exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shipyard.monitoring.metrics import ServiceMetrics
from shipyard.routing import CostConfig

DASHBOARD = Path(__file__).parents[2] / "dashboards" / "grafana" / "shipyard.json"
SELECTOR = 'deployment=~"$deployment", variant=~"$variant", model_version=~"$model_version"'
UNLABELLED = {"shipyard_process_cpu_seconds_total", "shipyard_process_resident_memory_bytes",
              "shipyard_process_threads", "shipyard_metric_label_sets_collapsed_total"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Sample name -> its label names, from a real exposition with every series touched."""
    metrics = ServiceMetrics(max_label_sets=1)
    v = metrics.variant("d", "v", "1", CostConfig(per_request=1))
    metrics.variant("d", "v", "2")  # past the cap: touches the collapsed counter
    v.request(200, 0.01)
    v.error("timeout")
    v.fallback()
    v.batch(4, 0.1)
    v.violation("pii")
    v.set_inflight(1)
    v.set_queue_depth(1)
    body, _ = metrics.render()
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            names.setdefault(s.name, set()).update(s.labels)
    return names


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_every_metric_a_query_names_is_exported(dashboard: dict, exported: dict) -> None:
    named = {m for e in exprs(dashboard) for m in re.findall(r"\bshipyard_[a-z0-9_]+", e)}
    assert named, "the dashboard queries no shipyard series"
    assert named - set(exported) == set()


def test_every_exported_series_has_a_panel(dashboard: dict, exported: dict) -> None:
    text = "\n".join(exprs(dashboard))
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in exported}
    missing = {f for f in families if f not in text}
    assert missing == set()


def test_template_variables_and_split_by_model_version(dashboard: dict) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "deployment", "variant", "model_version", "split"} <= set(variables)
    assert variables["split"]["current"]["value"] == "model_version"
    assert "model_version" in [o["value"] for o in variables["split"]["options"]]
    for name in ("deployment", "variant", "model_version"):
        assert variables[name]["multi"] and variables[name]["includeAll"]
    used = set(re.findall(r"\$(\w+)", json.dumps(dashboard["panels"])))
    builtin = {"__rate_interval", "__range", "__interval"}
    assert used - builtin <= set(variables)
    split = [p for p in dashboard["panels"] if "$split" in json.dumps(p.get("targets", []))]
    assert len(split) >= 10


def test_labelled_queries_filter_on_all_three_labels(dashboard: dict) -> None:
    for e in exprs(dashboard):
        for metric in re.findall(r"\bshipyard_[a-z0-9_]+", e):
            if metric not in UNLABELLED:
                assert re.search(rf"{metric}\{{{re.escape(SELECTOR)}\}}", e), e


def test_queries_are_balanced_and_latency_uses_histogram_quantile(dashboard: dict) -> None:
    for e in exprs(dashboard):
        for open_, close in ("()", "{}", "[]"):
            depth = 0
            for ch in e:
                depth += (ch == open_) - (ch == close)
                assert depth >= 0, e
            assert depth == 0, e
    quantiles = [e for e in exprs(dashboard) if "histogram_quantile" in e]
    assert any("shipyard_request_duration_seconds_bucket" in e for e in quantiles)
    assert all("le)" in e for e in quantiles)  # aggregations keep the bucket label


def test_panel_ids_are_unique_and_every_panel_has_a_datasource(dashboard: dict) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}"
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24
    assert dashboard["uid"] and dashboard["title"]
