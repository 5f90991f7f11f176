"""The lazy-regime study (ntkbayes/lazy/, docs/math.md (c)): outputs, a sign the theory predicts, config checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from toydata import tiny_splits

from ntkbayes import cli, lazy
from ntkbayes.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny_lazy"
datasets = ["moons"]
members = 2
num_train = 24
num_val = 8
num_test = 16
num_probe = 12
[model]
depth = 1
[regimes.reg_init]
reg = 1e-3
[regimes.onehot]
reg = 0.0
[regimes.smoothed]
reg = 0.0
label_smoothing = 0.1
[convergence]
widths = [16, 256]
tol = 1e-6
max_iter = 300
[trajectory]
width = 16
lr = 2.0
steps = 30
records = 5
[agreement]
widths = [16, 256]
regimes = ["reg_init"]
"""

STEMS = ("kernel_drift_vs_width", "lin_gap_max_logit_vs_width", "param_movement_vs_width", "trajectory",
         "trajectory_lin_gap", "agreement_vs_width")


def _write(tmp_path: Path, text: str, name: str = "suite.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lazy")
    cfg = lazy.load_config(_write(tmp, TINY))
    out = tmp / "out"
    # "moons" only names the data in the suite; the test supplies its own small blobs (3 classes, 4 features)
    summary = lazy.run_study(cfg, out, device="cpu", data={"moons": tiny_splits(n=90, classes=3, dim=4, seed=2)})
    return cfg, out, summary


def test_outputs_exist_and_are_well_formed(study):
    cfg, out, summary = study
    for name in ("README.md", "table.md", "conventions.json", "width_sweep.csv", "slopes.csv", "trajectory.csv",
                 "agreement.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for stem in STEMS:  # PNG always (PDF too where the report's figure settings ask for it)
        assert (out / "figures" / f"{stem}.png").stat().st_size > 1000, stem
    sweep = pd.read_csv(out / "width_sweep.csv")
    assert len(sweep) == len(cfg.regimes) * 2 * cfg.members
    assert set(sweep["width"]) == {16, 256} and set(sweep["regime"]) == {r.label for r in cfg.regimes}
    for col in ("kernel_drift", "lin_gap_max_logit", "param_movement", "max_abs_logit", "train_acc"):
        assert np.isfinite(sweep[col]).all() and (sweep[col] >= 0).all(), col
    agree = pd.read_csv(out / "agreement.csv")
    assert set(agree["pair"]) == {f"{a}–{b}" for a, b in lazy.PAIRS}
    assert len(agree) == 2 * len(lazy.PAIRS) * cfg.members
    assert ((agree["tv_mean"] >= 0) & (agree["tv_mean"] <= 1)).all()
    traj = pd.read_csv(out / "trajectory.csv")
    assert sorted(set(traj["step"])) == lazy.record_steps(30, 5)
    assert (traj.loc[traj["step"] == 0, ["kernel_drift", "param_distance"]] == 0).all().all()
    conv = json.loads((out / "conventions.json").read_text(encoding="utf-8"))
    assert conv["regimes"]["smoothed"] == {"label": "smoothed", "reg": 0.0, "anchor": "init", "label_smoothing": 0.1}
    assert conv["num_train"] == 24 and conv["convergence"]["widths"] == [16, 256]
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert all(f"*{r.label}*" in readme for r in cfg.regimes) and "## Findings" in readme
    assert summary["rows"]["width_sweep"] == len(sweep)


def test_regularized_anchor_init_is_lazier_when_wider(study):
    """Theory (math.md (c), NTK scaling): with λ > 0 anchored at θ0 the kernel moves less and the network stays
    closer to its linearization as the width grows; every drift is finite."""
    _, out, _ = study
    sweep = pd.read_csv(out / "width_sweep.csv")
    means = sweep[sweep["regime"] == "reg_init"].groupby("width")[["kernel_drift", "lin_gap_max_logit"]].mean()
    assert means["kernel_drift"].iloc[-1] < means["kernel_drift"].iloc[0]
    assert means["lin_gap_max_logit"].iloc[-1] < means["lin_gap_max_logit"].iloc[0]
    slopes = pd.read_csv(out / "slopes.csv")
    row = slopes[(slopes["regime"] == "reg_init") & (slopes["metric"] == "kernel_drift")]
    assert len(row) == 1 and float(row["slope"].iloc[0]) < 0
    # the linearized model and the kernel solution are one function (up to the L-BFGS tolerance)
    agree = pd.read_csv(out / "agreement.csv")
    lk = agree[(agree["regime"] == "reg_init") & (agree["pair"] == "linearized–kernel")]
    assert lk["tv_mean"].max() < 1e-3


def test_onehot_logits_keep_growing_along_gd(study):
    """λ = 0 with one-hot targets has no finite minimizer: the largest logit grows along gradient descent."""
    _, out, _ = study
    traj = pd.read_csv(out / "trajectory.csv")
    part = traj[traj["regime"] == "onehot"].groupby("step")["max_abs_logit"].mean()
    assert part.iloc[-1] > part.iloc[len(part) // 2] > part.iloc[1]


def test_fit_slopes_recovers_a_power_law():
    widths = [16, 64, 256, 1024]
    rows = [{"dataset": "d", "regime": "r", "width": w, "member": s, "kernel_drift": 3.0 * w ** -0.5 * (1 + 0.01 * s),
             "lin_gap_max_logit": 2.0 * w ** -1.0, "lin_gap_tv_mean": 0.0, "param_movement": 1.0}
            for w in widths for s in range(2)]
    slopes = lazy.fit_slopes(pd.DataFrame(rows)).set_index("metric")
    assert slopes.loc["kernel_drift", "slope"] == pytest.approx(-0.5, abs=1e-6)
    assert slopes.loc["lin_gap_max_logit", "slope"] == pytest.approx(-1.0, abs=1e-9)
    assert slopes.loc["param_movement", "slope"] == pytest.approx(0.0, abs=1e-12)
    assert "lin_gap_tv_mean" not in slopes.index                 # no positive values: no fit


def test_record_steps():
    steps = lazy.record_steps(1000, 14)
    assert steps[0] == 0 and steps[1] == 1 and steps[-1] == 1000
    assert all(a < b for a, b in zip(steps, steps[1:]))


def test_committed_suite_is_valid():
    cfg = lazy.load_config(ROOT / "benchmarks" / "suites" / "lazy.toml")
    kinds = {(r.reg > 0, r.anchor, r.label_smoothing > 0) for r in cfg.regimes}
    assert kinds == {(True, "init", False), (True, "zero", False), (False, "init", False), (False, "init", True)}
    assert cfg.convergence["widths"][0] == 64 and cfg.convergence["widths"][-1] == 4096
    assert set(cfg.datasets) == {"digits", "mnist1d"}


@pytest.mark.parametrize("text, key", [
    ("bogus = 1\n", "bogus"),
    ("[trajectory]\nspeed = 2\n", "trajectory.speed"),
    ("[regimes.a]\nreg = 0.1\nanchr = 'init'\n", "regimes.a.anchr"),
    ("members = 'two'\n", "members"),
    ("[convergence]\nwidths = [64, -1]\n", "convergence.widths"),
    ("[regimes.a]\nreg = 0.0\n[agreement]\nregimes = ['a']\n", "agreement.regimes"),
    ("num_train = 8\nnum_probe = 16\n", "num_probe"),
    ("datasets = ['nope']\n", "datasets"),
    ("[regimes.a]\nanchor = 'init'\n", "regimes.a.reg"),
    ("regimes = [1, 2]\n", "regimes"),
    ("[regimes.a]\nreg = 0.1\nanchor = 'origin'\n", "regimes.a.anchor"),
])
def test_config_errors_name_file_and_key(tmp_path, text, key):
    path = _write(tmp_path, text, "bad_lazy.toml")
    with pytest.raises(UserError, match=r"bad_lazy\.toml.*'" + re.escape(key) + "'"):
        lazy.load_config(path)


def test_cli_reports_a_bad_suite_as_one_line(tmp_path, capsys):
    path = _write(tmp_path, "[model]\ndepth = 1\nwidth = 3\n", "bad_lazy.toml")
    assert cli.main(["lazy", str(path), "--out", str(tmp_path / "out")]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad_lazy.toml" in err[0] and "model.width" in err[0]
    assert not (tmp_path / "out").exists()
