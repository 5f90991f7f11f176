"""``compare_store`` / ``ntkbayes compare`` on a fake results store (tests/report/conftest.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fake_store import DATASETS, METHODS, SEEDS, write_fake_store

from ntkbayes.errors import UserError
from ntkbayes.harness.store import ResultsStore
from ntkbayes.metrics.compare import compare
from ntkbayes.report.comparison import MATRIX_MEASURES, compare_store, headline_tables, load_runs, read_matrices

LABELS = sorted(label for label, _, _ in METHODS)
DIVERGENCES = ("js", "kl", "kl_inf_frac", "tv")
MEMBER_DISTANCES = ("energy", "w1")  # defined only when both sides have S ≥ 2 (map has S = 1)


def _splits(dataset: str) -> list[str]:
    return ["test", *(f"ood_{s}" for s in DATASETS[dataset][2])]


def test_matrices_cover_every_split_and_measure(compared_store):
    root, results = compared_store
    assert sorted(results) == sorted(DATASETS)
    for dataset in DATASETS:
        for split in _splits(dataset):
            for measure in (*MATRIX_MEASURES, "n_seeds"):
                df = results[dataset][f"{split}/{measure}"]
                assert list(df.index) == LABELS and list(df.columns) == LABELS
        assert not any(k.startswith("ood_") and k.split("/")[0] not in _splits(dataset) for k in results[dataset])


def test_csv_shapes_diagonals_and_symmetry(compared_store):
    root, results = compared_store
    for dataset in DATASETS:
        for split in _splits(dataset):
            for measure in (*DIVERGENCES, *MEMBER_DISTANCES, "agree"):
                path = root / "compare" / dataset / f"{split}__{measure}.csv"
                df = pd.read_csv(path, index_col=0)
                assert df.shape == (len(LABELS), len(LABELS)), path
                assert list(df.index) == LABELS and list(df.columns) == LABELS
                assert (root / "compare" / dataset / f"{split}__{measure}.md").exists()
                diag = np.diag(df.to_numpy())
                if measure == "agree":
                    np.testing.assert_array_equal(diag, 1.0)
                elif measure in MEMBER_DISTANCES:
                    assert diag[LABELS.index("map")] != diag[LABELS.index("map")]
                    np.testing.assert_array_equal(np.delete(diag, LABELS.index("map")), 0.0)
                else:
                    np.testing.assert_array_equal(diag, 0.0)
                if measure != "kl":
                    # symmetric measures computed once per pair, then a mean over 2 seeds: a few ulps
                    np.testing.assert_allclose(df.to_numpy(), df.to_numpy().T, rtol=1e-12, equal_nan=True)
            n = pd.read_csv(root / "compare" / dataset / f"{split}__n_seeds.csv", index_col=0)
            np.testing.assert_array_equal(n.to_numpy(), len(SEEDS))
            # off-diagonal divergences of different methods are positive
            js = results[dataset][f"{split}/js"].to_numpy()
            assert (js[~np.eye(len(LABELS), dtype=bool)] > 0).all()


def test_entries_are_seed_means_of_direct_comparisons(compared_store):
    root, results = compared_store
    store = ResultsStore(root)
    runs = load_runs(root)["digits"]
    a, b = "ntk_ensemble[mode=linearized]", "laplace"
    direct = {"kl": [], "js": [], "spearman/mutual_info": []}
    for seed in SEEDS:
        pa = store.load_predictions(runs[seed][a]["run_id"])[2]["noise"]
        pb = store.load_predictions(runs[seed][b]["run_id"])[2]["noise"]
        res = compare(pa, pb)
        direct["kl"].append(res["kl_ab"])
        direct["js"].append(res["js"])
        direct["spearman/mutual_info"].append(res["spearman/mutual_info"])
    for measure, values in direct.items():
        # the same per-seed values averaged by pandas instead of numpy: a few ulps
        assert results["digits"][f"ood_noise/{measure}"].loc[a, b] == pytest.approx(np.mean(values), rel=1e-12)
    # KL is the asymmetric one: row a, column b = KL(p_a ‖ p_b)
    kl = results["digits"]["ood_noise/kl"]
    assert kl.loc[a, b] != pytest.approx(kl.loc[b, a])
    # written and read back at full precision
    back = read_matrices(root, "digits")
    pd.testing.assert_frame_equal(back["ood_noise/kl"], kl, check_exact=True, check_names=False)


def test_constant_scores_give_nan_not_crash(compared_store):
    _, results = compared_store
    mi = results["moons"]["test/spearman/mutual_info"]
    assert mi.loc["map"].isna().all() and mi["map"].isna().all()
    assert mi.loc["laplace", "laplace"] == pytest.approx(1.0)


def test_headline_summary_names_ntk_vs_references(compared_store):
    root, _ = compared_store
    text = (root / "compare" / "summary.md").read_text()
    assert "How close are NTK ensembles" in text
    for dataset in DATASETS:
        assert f"## {dataset}" in text
    row = next(line for line in text.splitlines() if line.startswith("| ntk_ensemble[mode=linearized] | laplace"))
    assert "★" in row and "Laplace" in row  # the only reference is the closest
    assert "| map |" not in text  # map is neither an NTK variant nor a Bayesian reference
    assert "gp" not in load_runs(root)["moons"][0]  # the failed gp cell is ignored


def test_filters_and_user_errors(tmp_path, png_only):
    root = write_fake_store(tmp_path / "r")
    results = compare_store(root, datasets=["moons"], methods=["laplace", "map"], figures=False)
    assert list(results) == ["moons"]
    assert list(results["moons"]["test/js"].index) == ["laplace", "map"]
    with pytest.raises(UserError, match="does not exist"):
        compare_store(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no records.jsonl"):
        compare_store(tmp_path / "empty")
    only_failed = tmp_path / "failed"
    only_failed.mkdir()
    failed = [line for line in (root / "records.jsonl").read_text().splitlines() if '"status":"failed"' in line]
    (only_failed / "records.jsonl").write_text("\n".join(failed) + "\n")
    with pytest.raises(UserError, match="no 'ok' records"):
        compare_store(only_failed)
    with pytest.raises(UserError, match="unknown dataset 'cifar'"):
        compare_store(root, datasets=["cifar"])
    with pytest.raises(UserError, match="unknown method 'swag'"):
        compare_store(root, methods=["laplace", "swag"])


def test_compare_store_elsewhere_with_filters(tmp_path, png_only):
    root = write_fake_store(tmp_path / "r")
    out = tmp_path / "elsewhere"
    results = compare_store(root, ["moons"], None, out_dir=out)
    assert list(results) == ["moons"]
    assert (out / "compare" / "summary.md").exists()
    assert (out / "compare" / "moons" / "test__js.csv").exists()
    assert (out / "figures" / "compare_moons_test.png").exists()  # four measures: one page
    assert not (out / "figures" / "compare_moons_ood_far.png").exists()  # OOD matrices: tables only
    assert not (out / "figures" / "compare_moons_test_p2.png").exists()
    assert not (out / "compare" / "digits").exists()
    assert math.isfinite(pd.read_csv(out / "compare" / "moons" / "test__js.csv", index_col=0).iloc[0, 1])


def test_headline_families_are_exact_not_substrings():
    labels = ["ntk_ensemble[mode=linearized]", "laplace", "gpu_net", "my_gp"]
    mats = {k: pd.DataFrame(0.1, index=labels, columns=labels) for k in
            ("test/js", "test/tv", "test/agree", "test/spearman/mutual_info")}
    fams = {"ntk_ensemble[mode=linearized]": "ntk", "laplace": "laplace", "gpu_net": "map", "my_gp": "gp"}
    table = headline_tables({"d": mats}, fams)["d"]
    assert list(table["reference"]) == ["laplace", "my_gp"]  # "gpu_net" contains "gp" but is a MAP network
    assert list(table["family"]) == ["Laplace", "GP"]
    # records without a family: the method name (label up to "[") is the family
    assert list(headline_tables({"d": mats})["d"]["reference"]) == ["laplace"]
