"""Rendered outputs are byte-identical across reruns: figures (PNG and PDF, no dates or versions in their
metadata) and the report page (no build time)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from fake_store import write_fake_store

from ntkbayes.report import figures as fg
from ntkbayes.report.html import build_report


def _digest(paths) -> dict:
    return {p.as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_figures_are_byte_deterministic(tmp_path, monkeypatch):
    monkeypatch.setattr(fg, "FORMATS", ("png", "pdf"))
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(60, 3, generator=g, dtype=torch.float64), -1)
    data = {"a": (probs, torch.randint(0, 3, (60,), generator=g))}
    first = _digest(fg.reliability_diagrams(data, tmp_path / "one" / "rel"))
    second = _digest(fg.reliability_diagrams(data, tmp_path / "two" / "rel"))
    assert [k.rsplit("/", 1)[1] for k in first] == ["rel.png", "rel.pdf"]
    assert list(first.values()) == list(second.values())
    pdf = (tmp_path / "one" / "rel.pdf").read_bytes()
    assert b"CreationDate" not in pdf and b"Matplotlib" not in pdf
    assert b"Software" not in (tmp_path / "one" / "rel.png").read_bytes()


def test_report_rerun_rewrites_identical_bytes(tmp_path, png_only):
    root = write_fake_store(tmp_path / "r")
    page = build_report(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".png", ".html", ".csv", ".md"))
    before = _digest(files)
    build_report(root, force=True)  # redraw everything
    assert _digest(files) == before and np.all([p.exists() for p in files])
    assert "report built" not in page.read_text()
