"""Posterior-fidelity rows (ntkbayes.harness.reference): the suite key, the computation against an independent numpy
one from the stored predictions, the leaderboard columns and footnote, and rows kept without predictions."""

from __future__ import annotations

import json
import shutil

import harness_fakes
import numpy as np
import pytest
import torch

from ntkbayes.errors import UserError
from ntkbayes.harness.config import parse_suite
from ntkbayes.harness.reference import REFERENCE_FILE, compute_references, read_rows
from ntkbayes.harness.runner import run_suite
from ntkbayes.harness.store import ResultsStore
from ntkbayes.metrics.reference import PROB_FLOOR
from ntkbayes.report.export import leaderboard

#: The reference row: a 3-member bootstrap ensemble of the fake logistic regression, swept so its label has brackets.
REF = "ens[members=3]"


@pytest.fixture(autouse=True)
def fakes():
    threads = torch.get_num_threads()
    harness_fakes.register_fakes()
    yield
    harness_fakes.unregister_fakes()
    torch.set_num_threads(threads)


def _raw(reference=REF, seeds=(0, 1)):
    return {"name": "r", "seeds": list(seeds), "device": "cpu", "threads": 1,
            "datasets": {"blobs": {"dataset": "_tiny", "n": 60, "reference": reference},
                         "plain": {"dataset": "_tiny", "n": 45}},
            "methods": {"short": {"method": "_test_logreg", "steps": 3},
                        "long": {"method": "_test_logreg", "steps": 40},
                        "ens": {"method": "_test_logreg", "members": [3], "steps": 20}}}


@pytest.fixture
def store_dir(tmp_path):
    run_suite(parse_suite(_raw(), "r.toml"), tmp_path, progress=False)
    return tmp_path


def _numpy_row(store: ResultsStore, run_id: str, ref_id: str) -> dict:
    """Independent: the two stored test_probs files, float64 numpy, written out from the definitions."""
    p = store.load_arrays(run_id)["test_probs"].astype(np.float64).mean(0)
    r = store.load_arrays(ref_id)["test_probs"].astype(np.float64).mean(0)
    with np.errstate(divide="ignore"):
        log_p = np.log(np.maximum(p, PROB_FLOOR))
        terms = np.where(r > 0, r * (np.log(np.where(r > 0, r, 1.0)) - log_p), 0.0)
    return {"ref/agreement": np.mean(p.argmax(-1) == r.argmax(-1)),
            "ref/tv": np.mean(0.5 * np.abs(p - r).sum(-1)),
            "ref/kl": np.mean(np.maximum(terms.sum(-1), 0.0))}


def test_rows_match_numpy_and_reference_has_none(store_dir):
    store = ResultsStore(store_dir)
    recs = {r["run_id"]: r for r in store.records()}
    rows = read_rows(store_dir)
    # blobs: short and long against ens[members=3], per seed; nothing for plain, nothing for the reference row (e)
    assert sorted((r["method_label"], r["seed"]) for r in rows) == [("long", 0), ("long", 1), ("short", 0),
                                                                    ("short", 1)]
    assert all(r["dataset_label"] == "blobs" and r["reference_label"] == REF for r in rows)
    for row in rows:
        ref = recs[row["reference_run_id"]]
        assert ref["method_label"] == REF and ref["seed"] == row["seed"] and ref["dataset_label"] == "blobs"
        assert row["reference_flagged"] is None and row["reference_rhat"] is None  # the fake records no R-hat
        want = _numpy_row(store, row["run_id"], row["reference_run_id"])
        assert row["metrics"]["ref/agreement"] == want["ref/agreement"]
        for key in ("ref/tv", "ref/kl"):
            # both sides average the same float32-stored members in float64 and sum ≤ 3 terms per point over
            # N = 15 test points: a few ulps of O(1) values, far inside 1e-12
            assert row["metrics"][key] == pytest.approx(want[key], rel=1e-12, abs=1e-14), key
        assert row["num_points"] == store.load_arrays(row["run_id"])["test_probs"].shape[1]
    # the file is sorted, one compact JSON object per line, keys sorted
    lines = (store_dir / REFERENCE_FILE).read_text().splitlines()
    assert lines == [json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False) for r in rows]
    assert lines == sorted(lines, key=lambda s: [json.loads(s)[k] for k in ("dataset_label", "method_label",
                                                                            "seed", "run_id")])


def test_rerun_gives_the_same_bytes(store_dir):
    before = (store_dir / REFERENCE_FILE).read_bytes()
    summary = run_suite(parse_suite(_raw(), "r.toml"), store_dir, progress=False)
    assert summary.ran == 0 and summary.reference.computed == 4 and summary.reference.rows == 4
    assert (store_dir / REFERENCE_FILE).read_bytes() == before


def test_markdown_leaderboard_shows_ref_columns_and_footnote(store_dir):
    md = leaderboard(store_dir, "md")
    blobs, plain = md.split("## blobs")[1].split("## plain")
    assert "ref/agreement ↑" in blobs and "ref/tv ↓" in blobs and "ref/kl ↓" in blobs
    assert f"Reference: {REF}." in blobs and "ID test points" in blobs
    ref_line = next(line for line in blobs.splitlines() if line.startswith(f"| {REF}"))
    assert ref_line.count("—") == 3  # the reference row has no ref/* values
    assert "ref/" not in plain and "Reference:" not in plain  # a dataset without a reference: no columns
    latex, html = leaderboard(store_dir, "latex"), leaderboard(store_dir, "html")
    assert "KL: KL(reference" in latex and f"Reference: {REF}" in latex.replace(r"\_", "_")
    assert "Agree" in html and f"Reference: {REF}" in html
    csv = leaderboard(store_dir, "csv")
    assert ",ref/kl," in csv and ",ref/agreement," in csv


def test_bad_reference_label_is_a_user_error():
    with pytest.raises(UserError, match=r"r\.toml: \[datasets\.blobs\] reference: 'ens'.*expected one of "
                                        r"short, long, ens\[members=3\]"):
        parse_suite(_raw(reference="ens"), "r.toml")
    raw = _raw()
    raw["methods"]["ens"]["datasets"] = ["plain"]  # the row exists but does not run on blobs
    with pytest.raises(UserError, match=r"\[datasets\.blobs\] reference"):
        parse_suite(raw, "r.toml")
    with pytest.raises(UserError, match=r"\[datasets\.blobs\] reference: expected the label"):
        parse_suite(_raw(reference=3), "r.toml")


def test_rows_kept_without_predictions_and_render_reads_them(store_dir):
    before = (store_dir / REFERENCE_FILE).read_bytes()
    md = leaderboard(store_dir, "md")
    shutil.rmtree(store_dir / "predictions")  # a fresh clone: records and reference.jsonl only
    summary = compute_references(store_dir, {"blobs": REF})
    assert (summary.rows, summary.computed, summary.kept) == (4, 0, 4)
    assert (store_dir / REFERENCE_FILE).read_bytes() == before
    summary = compute_references(store_dir)  # what `ntkbayes render` does: the references the file names
    assert (summary.rows, summary.kept) == (4, 4)
    assert leaderboard(store_dir, "md") == md


def test_missing_reference_cell_is_skipped_and_reported(tmp_path):
    raw = _raw()
    raw["methods"]["ens"]["fail"] = "raise"  # every reference cell fails
    summary = run_suite(parse_suite(raw, "r.toml"), tmp_path, progress=False)
    assert summary.reference.rows == 0 and len(summary.reference.notes) == 2
    assert "blobs seed 0: the reference row 'ens[members=3]' has no ok cell" in summary.reference.notes[0]
    assert "skipped: blobs seed 1" in str(summary)
    assert read_rows(tmp_path) == []


def test_suite_without_reference_writes_no_file(tmp_path):
    raw = _raw()
    del raw["datasets"]["blobs"]["reference"]
    summary = run_suite(parse_suite(raw, "r.toml"), tmp_path, progress=False, seeds=[0])
    assert summary.reference is None and not (tmp_path / REFERENCE_FILE).exists()
    assert "ref/" not in leaderboard(tmp_path, "md") and "Reference" not in leaderboard(tmp_path, "html")


def test_flagged_reference_is_recorded_and_named_in_the_footnote(store_dir):
    store = ResultsStore(store_dir)
    for rec in store.records():
        if rec["method_label"] == REF:  # a newer ok record of the reference cell, as an hmc fit would write it
            info = {**rec["fit_info"], "flagged": rec["seed"] == 1, "rhat": 1.01 + rec["seed"]}
            store.append({**rec, "fit_info": info})
    compute_references(store_dir, {"blobs": REF})
    rows = read_rows(store_dir)
    assert {(r["seed"], r["reference_flagged"], r["reference_rhat"]) for r in rows} == {(0, False, 1.01),
                                                                                        (1, True, 2.01)}
    assert "Its sampler diagnostics flagged seed(s) 1 " in leaderboard(store_dir, "md")
