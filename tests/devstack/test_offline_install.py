"""After `make install`, the suite never reaches the network; what is missing, or a network that
does not answer, is named plainly instead of failing somewhere deep in a download."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lianluo.devstack import helm, k8s, k8s_build


def test_the_tests_take_helm_from_the_install_and_never_download_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(helm.ToolFetchError, match=r"run `make install` first"):
        helm.tools(fetch=False)
    assert not any(tmp_path.rglob("*.whl")), "nothing is fetched from the tests"


def test_a_cluster_without_a_built_apiserver_names_make_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIANLUO_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(k8s.ClusterError, match=r"kube-apiserver is not built .* `make install`"):
        k8s.up(tmp_path / "state")
    assert not (tmp_path / "cache").exists(), "nothing is built from the tests"


def test_an_unreachable_package_network_is_named_not_blamed_on_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a loopback port that nothing listens on: the network is cut
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sources = tmp_path / "debian.sources"
    sources.write_text(
        f"Types: deb\nURIs: http://127.0.0.1:{port}/debian\nSuites: bookworm\nComponents: main\n"
    )
    monkeypatch.setattr(k8s_build, "_SYSTEM_SOURCES", sources)
    with pytest.raises(k8s_build.BuildError, match=r"is Debian's package network reachable"):
        k8s_build.fetch_source(tmp_path / "work")
