"""Fixtures of the report tests: the fake results store of ``fake_store.py``, compared and reported once."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_store import write_fake_store


@pytest.fixture
def fake_store(tmp_path: Path) -> Path:
    return write_fake_store(tmp_path / "results")


@pytest.fixture
def png_only(monkeypatch):
    """Draw figures as PNG only (PDF rendering doubles the time; tests/report/test_figures.py checks both)."""
    from ntkbayes.report import figures

    monkeypatch.setattr(figures, "FORMATS", ("png",))


@pytest.fixture(scope="session")
def report_store(tmp_path_factory) -> tuple[Path, Path]:
    """The fake store with its report built once for all tests here (PNG figures only): (root, report path)."""
    from ntkbayes.report import figures
    from ntkbayes.report.html import build_report

    root = write_fake_store(tmp_path_factory.mktemp("report") / "results")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "FORMATS", ("png",))
        page = build_report(root)
    return root, page


@pytest.fixture(scope="session")
def compared_store(report_store) -> tuple[Path, dict]:
    """The same store's comparison results (``compare_store`` without figures): (root, results)."""
    from ntkbayes.report.comparison import compare_store

    root, _ = report_store
    return root, compare_store(root, figures=False)
