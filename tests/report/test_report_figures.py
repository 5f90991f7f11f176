"""Figure functions write PNG and PDF files and reject malformed input (ntkbayes/report/figures.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ntkbayes.report import figures as fg
from ntkbayes.report.heatmaps import comparison_heatmaps

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _probs(s: int, n: int, c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(s, n, c, generator=g, dtype=torch.float64), -1)


def _check(paths, formats=("png", "pdf")):
    assert [p.suffix[1:] for p in paths] == list(formats)
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 1000
        assert data.startswith(PNG_MAGIC if p.suffix == ".png" else b"%PDF")


def test_lazy_curves_png_and_pdf(tmp_path, monkeypatch):
    monkeypatch.setattr(fg, "FORMATS", ("png", "pdf"))
    rows = [{"x": w, "y": 1.0 / w + 0.01 * s, "hue": regime, "facet": metric}
            for w in (64, 256, 1024) for s in range(3) for regime in ("λ>0 init", "λ=0 one-hot")
            for metric in ("kernel drift", "linearization gap")]
    paths = fg.lazy_curves(pd.DataFrame(rows), tmp_path / "lazy" / "drift", logx=True, logy=True,
                           xlabel="width", ylabel="relative change", hue_title="regime", title="drift vs width")
    _check(paths)
    assert paths[0].parent == tmp_path / "lazy"
    # without hue and facet columns, and with non-positive values on a log axis (left out, no crash)
    _check(fg.lazy_curves(pd.DataFrame({"x": [0, 1, 2], "y": [1.0, 0.5, 0.0]}), tmp_path / "plain", logx=True,
                          logy=True))
    with pytest.raises(ValueError, match="missing column"):
        fg.lazy_curves(pd.DataFrame({"x": [1]}), tmp_path / "bad")


def test_plot_functions_write_pngs(tmp_path, png_only):
    labels = {"a": torch.randint(0, 3, (40,)), "b": torch.randint(0, 3, (40,))}
    data = {k: (_probs(1, 40, 3, i)[0], labels[k]) for i, k in enumerate(labels)}
    data["conf one"] = (torch.tensor([[1.0, 0.0, 0.0]] * 5, dtype=torch.float64), torch.zeros(5, dtype=torch.long))
    _check(fg.reliability_diagrams(data, tmp_path / "rel"), ("png",))
    cov = np.arange(1, 41) / 40
    _check(fg.risk_coverage_curves({"a": (cov, np.linspace(0, 0.3, 40))}, tmp_path / "rc"), ("png",))
    rng = np.random.default_rng(0)
    hist = {"a": {"msp": (rng.random(30), rng.random(10)), "mutual_info": (np.zeros(30), np.zeros(10))}}
    _check(fg.ood_histograms(hist, tmp_path / "hist", ood_name="far"), ("png",))
    df = pd.DataFrame([[0.0, np.inf], [0.5, np.nan]], index=["a", "b"], columns=["a", "b"])
    _check(comparison_heatmaps({"KL": df, "JS": df.fillna(0.0)}, tmp_path / "hm",
                               styles={"JS": {"vmin": 0.0, "vmax": None, "cmap": "mako"}}), ("png",))


def test_uncertainty_maps_grid_layout(tmp_path, png_only):
    xs, ys = np.linspace(-3, 3, 8), np.linspace(-2, 2, 6)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    grid = np.stack([gx.ravel(), gy.ravel()], -1).astype(np.float32)  # the runner's layout: x fastest
    assert fg._grid_shape(grid.astype(np.float64)) == (6, 8)
    probs = {"ens": _probs(4, 48, 2, 0).numpy().astype(np.float32), "map": _probs(1, 48, 2, 1)}
    paths = fg.uncertainty_maps(grid, probs, tmp_path / "map", points=grid[:5], point_labels=np.arange(5) % 2)
    _check(paths, ("png", "png"))
    assert [p.name for p in paths] == ["map_confidence.png", "map_mi.png"]  # one colour bar each
    with pytest.raises(ValueError, match="x fastest"):
        fg.uncertainty_maps(grid[:, ::-1].copy(), probs, tmp_path / "bad")  # y fastest
    with pytest.raises(ValueError, match="points"):
        fg.uncertainty_maps(grid, {"short": _probs(2, 47, 2, 0)}, tmp_path / "bad")
    with pytest.raises(ValueError, match="non-empty mapping"):
        fg.uncertainty_maps(grid, {}, tmp_path / "bad")


def test_method_palette_is_stable():
    p1 = fg.method_palette(["b", "a", "c"])
    p2 = fg.method_palette(["c", "a", "b", "a"])
    assert p1 == p2 and len(set(p1.values())) == 3
