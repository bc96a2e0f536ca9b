"""Prometheus scraping and the Grafana dashboard: one ServiceMonitor reaches every service, the
chart's and each cell's; the dashboard and docs/operations.md name only figures the services
serve, and the docs name every one."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from chart_render import CASES, ROOT, documents, render

from lianluo.operator.template import TemplateInputs, cell_children

# The case that has the Prometheus Operator's API and turns the dashboard on.
EVERYTHING = next(c for c in CASES if c.name == "everything")
# Where a figure is declared: a prometheus_client metric, or a gauge read at each scrape.
DECLARED = re.compile(r"\b(?:Counter|Gauge|Histogram|Info|Figure)\(\s*\"(lianluo_[a-z_]+)\"")
NAMED = re.compile(r"\blianluo_[a-z_]+")
# What Prometheus appends to a counter's, a histogram's or an info's name.
SUFFIXES = re.compile(r"_(total|bucket|count|sum|info)$")


def _of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return documents(render(EVERYTHING))


def test_one_service_monitor_scrapes_the_chart_services_and_every_cell_service(
    docs: list[dict[str, Any]],
) -> None:
    (monitor,) = _of_kind(docs, "ServiceMonitor")
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": ["lianluo"]}
    (endpoint,) = spec["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    # The figures' own `service` (acd), not the Kubernetes Service's name (cell-1-acd).
    assert endpoint["honorLabels"] is True
    selector = spec["selector"]["matchLabels"].items()
    inputs = TemplateInputs("registry.local/lianluo:1.2.3", "kafka:9092", "admin-key")
    built = [c for c in cell_children("cell-1", {}, inputs) if c["kind"] == "Service"]
    for service in [*_of_kind(docs, "Service"), *built]:
        name = service["metadata"]["name"]
        assert selector <= service["metadata"]["labels"].items(), name
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}, name


def test_each_chart_service_listens_for_scrapes_where_its_service_points(
    docs: list[dict[str, Any]],
) -> None:
    services = {s["metadata"]["name"]: s for s in _of_kind(docs, "Service")}
    for deployment in _of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        if name not in services:  # the operator: kopf serves no figures
            assert "metrics" not in ports and "LIANLUO_METRICS_PORT" not in env
            continue
        assert env["LIANLUO_METRICS_PORT"] == str(ports["metrics"]) == "9464", name
        (port,) = [p for p in services[name]["spec"]["ports"] if p["name"] == "metrics"]
        assert port["targetPort"] == "metrics", name


def test_without_the_prometheus_operator_nothing_asks_for_its_api() -> None:
    default = documents(render(CASES[0]))
    assert not _of_kind(default, "ServiceMonitor")
    assert not [d for d in _of_kind(default, "ConfigMap") if "dashboard" in d["metadata"]["name"]]


def test_the_dashboard_and_the_docs_name_the_figures_the_services_serve(
    docs: list[dict[str, Any]],
) -> None:
    (config,) = [
        d
        for d in _of_kind(docs, "ConfigMap")
        if d["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    dashboard = json.loads(config["data"]["lianluo.json"])
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert graphs and all(p["targets"] for p in graphs)
    queries = " ".join(t["expr"] for p in graphs for t in p["targets"])
    source = ROOT / "services" / "lianluo"
    served = {name for path in source.rglob("*.py") for name in DECLARED.findall(path.read_text())}
    operations = (ROOT / "docs" / "operations.md").read_text()
    section = operations.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]

    def figures(text: str) -> set[str]:
        return {SUFFIXES.sub("", name) for name in NAMED.findall(text)}

    assert figures(queries) <= served, "the dashboard reads a figure no service serves"
    assert figures(section) == served, "docs/operations.md and the code disagree on the figures"
