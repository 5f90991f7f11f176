"""Tuner: trials on validation data only, selection file round-trip, grid edges, resume, `ntkbayes run` applies it."""

from __future__ import annotations

import harness_fakes
import numpy as np
import pytest
import torch

from ntkbayes import data as nbdata
from ntkbayes.data.splits import make_splits
from ntkbayes.errors import UserError
from ntkbayes.harness import tune
from ntkbayes.harness.config import parse_suite
from ntkbayes.harness.runner import run_suite
from ntkbayes.harness.selection import dumps_selection, load_selection, selection_path, write_selection
from ntkbayes.harness.store import ResultsStore
from ntkbayes.methods import base

METHOD = "_test_tunable"
DATASET = "_tune_blobs"


class Tunable(harness_fakes.FakeLogReg):
    """The fake logistic regression with a search space (lr: 3 values, steps: 2 values; 6 points)."""

    name = METHOD
    search_space = {"lr": [0.01, 0.5, 2.0], "steps": [2, 40]}


base._REGISTRY.pop(METHOD, None)


def _load_blobs(root, seed, download, *, poison: bool = False):
    """Blobs whose train/val split does not depend on ``poison``; with it, test and OOD inputs are replaced by
    another distribution (a tuner that looked at them would select differently or crash)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(3, 2))
    y = np.arange(150) % 3
    x = centers[y] + rng.normal(size=(150, 2))
    far = rng.uniform(15, 20, size=(20, 2))
    d = make_splits(DATASET, x, y, seed=seed, extra_ood={"far": far}, ood_groups={"far": "far"})
    if not poison:
        return d
    import dataclasses

    bad = dataclasses.replace(d.test, x=torch.full_like(d.test.x, 1e6), y=torch.zeros_like(d.test.y))
    return dataclasses.replace(d, test=bad, ood={"far": torch.full_like(d.ood["far"], -1e6)})


@pytest.fixture(autouse=True)
def fakes():
    threads = torch.get_num_threads()
    harness_fakes.register_fakes()
    base._REGISTRY[METHOD] = Tunable
    nbdata._REGISTRY.pop(DATASET, None)
    nbdata.register(DATASET, family="synthetic")(_load_blobs)
    yield
    harness_fakes.unregister_fakes()
    base._REGISTRY.pop(METHOD, None)
    nbdata._REGISTRY.pop(DATASET, None)
    torch.set_num_threads(threads)


def _suite(tmp_path, *, poison=False, fixed=None, name="t.toml"):
    path = tmp_path / name
    path.write_text("")  # selection_path needs only the name; the suite is parsed from the dict
    methods = {"tun": {"method": METHOD, **(fixed or {})}, "plain": {"method": harness_fakes.METHOD, "steps": 5}}
    raw = {"seeds": [0, 1], "threads": 1, "datasets": {"blobs": {"dataset": DATASET, "poison": poison}},
           "methods": methods}
    return parse_suite(raw, path)


def test_trial_points_budget_and_coverage():
    space = {"a": [1, 2, 3, 4], "b": [0.1, 0.2, 0.3], "c": ["x", "y"]}
    pts = tune.trial_points(space, 8)
    assert len(pts) == 8 and pts == tune.trial_points(space, 8)  # deterministic
    for k, values in space.items():
        assert {p[k] for p in pts} == set(values)  # every value tried once when the budget allows
    assert len(tune.trial_points({"a": [1, 2]}, 8)) == 2
    assert tune.trial_points({}, 8) == []
    assert tune.grid_edge(space, {"a": 4, "b": 0.2, "c": "x"}) == ["a"]


def test_tune_selects_on_validation_only(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    clean = tune.tune_suite(_suite(tmp_path / "a"), tmp_path / "a" / "tuning", progress=False)
    poisoned = tune.tune_suite(_suite(tmp_path / "b", poison=True), tmp_path / "b" / "tuning", progress=False)
    assert clean.run.ok == poisoned.run.ok == 2 * 6 and clean.run.failed == 0
    a = (tmp_path / "a" / "t.selected.toml").read_bytes()
    b = (tmp_path / "b" / "t.selected.toml").read_bytes()
    assert a == b  # test and OOD data changed, the selection did not
    sel = load_selection(tmp_path / "a" / "t.selected.toml")
    assert set(sel["select"]["blobs"]) == {"tun"}  # `plain` has no search space: not tuned
    assert clean.untuned == ["plain"]
    recs = ResultsStore(tmp_path / "a" / "tuning").records()
    assert all(r["predictions"] is None and r["validation_only"] for r in recs)
    assert all(set(r["metrics"]) == {"val/nll", "val/acc", "train/acc"} for r in recs)
    assert not (tmp_path / "a" / "tuning" / "predictions").exists() or not any(
        (tmp_path / "a" / "tuning" / "predictions").iterdir())
    # resume: a second tune runs nothing and writes the same bytes
    again = tune.tune_suite(_suite(tmp_path / "a"), tmp_path / "a" / "tuning", progress=False)
    assert again.run.ran == 0 and again.run.already_done == 12
    assert (tmp_path / "a" / "t.selected.toml").read_bytes() == a


def test_selection_round_trip_and_grid_edge(tmp_path):
    sel = {"suite": "t", "objective": "val/nll", "max_trials": 8, "select": {"moons": {
        "ntk[mode=kernel]": {"0": {"params": {"weight_decay": 1e-05, "kind": "a b", "hidden": [64, 64]},
                                   "value": 0.0451, "trials": 8, "grid_edge": ["weight_decay"]},
                             "10": {"params": {"weight_decay": 0.001}, "value": 1.5, "trials": 7,
                                    "grid_edge": []}}}}}
    path = write_selection(tmp_path / "s.selected.toml", sel)
    back = load_selection(path)
    assert back == sel
    assert dumps_selection(back) == path.read_text()
    assert selection_path(tmp_path / "default.toml") == tmp_path / "default.selected.toml"


def test_run_applies_selection(tmp_path):
    suite = _suite(tmp_path)
    tune.tune_suite(suite, tmp_path / "tuning", progress=False)
    sel = load_selection(selection_path(suite.path))
    summary = run_suite(suite, tmp_path / "out", progress=False)
    assert summary.ok == 4 and summary.selection and summary.unselected == 2  # `plain` keeps its params
    for rec in ResultsStore(tmp_path / "out").records():
        assert {"val/nll", "val/acc", "train/acc", "cls/acc"} <= set(rec["metrics"])
        if rec["method_label"] != "tun":
            assert rec["selection"] is None
            continue
        choice = sel["select"]["blobs"]["tun"][str(rec["seed"])]
        assert {k: rec["params"][k] for k in choice["params"]} == choice["params"]
        assert rec["selection"]["params"] == choice["params"] and rec["selection"]["objective"] == "val/nll"
        assert rec["selection"]["grid_edge"] == choice["grid_edge"]
    # the selection lies on an edge of the lr or steps grid: the file says so, and so does the leaderboard
    assert any(c["grid_edge"] for c in sel["select"]["blobs"]["tun"].values())
    from ntkbayes.report.export import leaderboard

    md = leaderboard(tmp_path / "out", "md")
    assert "| tun ᵉ |" in md and "Parameters: " in md
    assert "Flags: e: a tuned or fitted hyperparameter lies on the edge" in md
    plain = run_suite(suite, tmp_path / "plain", progress=False, selection=False)
    assert plain.selection is None


def test_suite_fixed_key_is_not_searched_and_stale_file_is_an_error(tmp_path):
    suite = _suite(tmp_path, fixed={"lr": 0.5})
    assert tune.search_space(suite, suite.methods[0]) == {"steps": [2, 40]}
    tune.tune_suite(_suite(tmp_path), tmp_path / "tuning", progress=False)  # selects lr too
    with pytest.raises(UserError, match=r"lr is set by the suite"):
        run_suite(suite, tmp_path / "out", progress=False)


def test_objective_is_checked(tmp_path):
    with pytest.raises(UserError, match="--objective"):
        tune.tune_suite(_suite(tmp_path), tmp_path / "tuning", objective="test/nll", progress=False)


def test_cli_tune_then_run(tmp_path, capsys):
    from ntkbayes.cli import main

    suite = tmp_path / "s.toml"
    suite.write_text(f'seeds = [3]\nthreads = 1\n[datasets.blobs]\ndataset = "{DATASET}"\n'
                     f'[methods.tun]\nmethod = "{METHOD}"\n')
    assert main(["tune", str(suite), "--out", str(tmp_path / "tuning"), "--no-progress", "--max-trials", "4"]) == 0
    sel = load_selection(tmp_path / "s.selected.toml")
    assert sel["max_trials"] == 4 and sel["select"]["blobs"]["tun"]["3"]["trials"] == 4
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "tuned parameters from" in capsys.readouterr().out
    assert main(["tune", str(suite), "--objective", "test/acc", "--no-progress"]) == 2
    assert "--objective: expected one of" in capsys.readouterr().err


def test_inner_search_selects_what_separate_trials_select(tmp_path):
    """Kernel-mode NTK ensemble: λ is chosen inside one trial per seed (one kernel for every λ); the choice is the λ
    whose own trial has the lowest validation NLL, and the grid-edge rule sees the whole λ grid."""
    from ntkbayes.methods.ntk_ensemble import NTKEnsemble

    lams = [1e-4, 1e-3, 1e-2, 1e-1]
    fixed = {"mode": "kernel", "kernel": "analytic", "members": 2, "width": 16, "depth": 1}
    raw = {"seeds": [0], "threads": 1, "datasets": {"blobs": {"dataset": DATASET}},
           "methods": {"k": {"method": "ntk_ensemble", **fixed}}}
    (tmp_path / "t.toml").write_text("")
    suite = parse_suite(raw, tmp_path / "t.toml")
    old = NTKEnsemble.search_space
    NTKEnsemble.search_space = {"weight_decay": lams}
    try:
        inner = tune.tune_suite(suite, tmp_path / "tuning", progress=False)
        assert inner.run.ok == 1  # one trial for the whole λ grid
        choice = load_selection(tmp_path / "t.selected.toml")["select"]["blobs"]["k"]["0"]
        separate = tune.tune_suite(suite, tmp_path / "sep", objective="val/acc", progress=False, write=False)
        assert separate.run.ok == len(lams)  # another objective: one trial per λ
    finally:
        NTKEnsemble.search_space = old
    nll = {r["params"]["weight_decay"]: r["metrics"]["val/nll"] for r in ResultsStore(tmp_path / "sep").records()}
    best = min(nll, key=nll.get)
    assert choice["params"] == {"weight_decay": best}
    # the same strictly convex problem solved to convergence in float64, warm-started inside the trial and cold in
    # the separate one: Newton's polished iterates agree to rounding (n·ε·κ ≈ 1e-12 here), asserted at 1e-9
    assert choice["value"] == pytest.approx(nll[best], rel=1e-9, abs=1e-12)
    assert choice["grid_edge"] == (["weight_decay"] if best in (lams[0], lams[-1]) else [])
    trials_csv = (tmp_path / "tuning" / "trials.csv").read_text()
    assert "weight_decay_grid" in trials_csv and trials_csv.count("\n") == 2
