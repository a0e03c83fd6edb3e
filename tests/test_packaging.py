"""Packaging: one version everywhere, the licence the metadata names, type information shipped."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import pytest

import hitdet
from hitdet.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_is_the_distribution_metadata_version() -> None:
    assert hitdet.__version__ == importlib.metadata.version("hitdet")


def test_installed_metadata_is_this_pyproject(pyproject: dict[str, Any]) -> None:
    assert importlib.metadata.version("hitdet") == pyproject["project"]["version"]


def test_cli_version_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"hitdet {importlib.metadata.version('hitdet')}"


def test_license_file_is_the_mit_licence_pyproject_names(pyproject: dict[str, Any]) -> None:
    text = (ROOT / "LICENSE").read_text()
    assert pyproject["project"]["license"] == "MIT"
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 HitDet contributors" in text
    assert "LICENSE" in pyproject["project"]["license-files"]


@pytest.mark.parametrize("package", ["hitdet", "search_spaces", "strategies"])
def test_packages_ship_py_typed(pyproject: dict[str, Any], package: str) -> None:
    assert (ROOT / package / "py.typed").is_file()
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"][package]


def test_project_urls_and_export_extra(pyproject: dict[str, Any]) -> None:
    urls = pyproject["project"]["urls"]
    assert set(urls) == {"Homepage", "Source", "Issues"}
    extras = pyproject["project"]["optional-dependencies"]
    for name in ("onnx", "onnxruntime"):
        assert any(dep.startswith(name + ">") for dep in extras["export"])
        assert any(dep.startswith(name + ">") for dep in extras["dev"])
