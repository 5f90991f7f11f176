"""``ntkbayes compare DIR``: method × method comparison of saved predictive distributions.

Runs of a results store are matched when they share the dataset, its options and the seed (so they predicted on the
very same test and OOD points); for every pair of methods ``ntkbayes.metrics.compare.compare`` is computed on the
test points and, separately, on each OOD set, and the matrices are averaged over the seeds both methods ran
(NaN entries — e.g. a Spearman correlation of a constant score — are left out of the average). Row a, column b of a
matrix holds measure(a, b); only KL is asymmetric (row a, column b = KL(p_a ‖ p_b)).

Output under DIR::

    compare/<dataset>/<split>__<measure>.csv   full precision, rows and columns = method labels
    compare/<dataset>/<split>__<measure>.md    the same, rounded, as a Markdown table
    compare/summary.md                         the headline: NTK ensembles vs Laplace, GP and deep ensembles
    figures/compare_<dataset>_test.png         heatmaps of the main measures on test points (``HEATMAP_SPLITS``)

``<split>`` is ``test`` or ``ood_<set>``; ``<measure>`` is one of ``MATRIX_MEASURES`` with "/" written as "_".
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ntkbayes import results as _results
from ntkbayes.errors import UserError
from ntkbayes.harness.store import STATUS_OK, ResultsStore
from ntkbayes.metrics.compare import MIN_MEMBERS_FOR_DISTRIBUTION, compare, mean_pairwise_distance
from ntkbayes.predictive import PROB_SCORES, Predictive
from ntkbayes.report.tables import format_number, markdown_table

_SCORE_NAMES = {"msp": "1 − max p", "entropy": "predictive entropy", "expected_entropy": "expected entropy",
                "mutual_info": "mutual information", "variance": "member variance"}

#: Matrix name → (key of ``compare``'s result for row a, column b; display title; colour scale (vmin, vmax), None
#: ends taken from the data, since divergences between real methods are often far below their bound; colour map).
#: Low is close for divergences and distances, high is close for agreement and correlations.
MATRIX_MEASURES: dict[str, tuple[str, str, tuple[float | None, float | None], str]] = {
    "js": ("js", "Jensen–Shannon divergence (nats)", (0.0, None), "rocket_r"),
    "kl": ("kl_ab", "KL(p_a ‖ p_b) (nats)", (0.0, None), "rocket_r"),
    "kl_inf_frac": ("kl_inf_frac", "fraction of points with infinite KL", (0.0, 1.0), "rocket_r"),
    "tv": ("tv", "total variation", (0.0, None), "rocket_r"),
    "agree": ("agree", "top-1 agreement", (None, 1.0), "mako"),
    "energy": ("energy", "energy distance of member distributions", (0.0, None), "rocket_r"),
    "w1": ("w1", "1-Wasserstein of member probabilities (mean over classes)", (0.0, None), "rocket_r"),
    **{f"spearman/{s}": (f"spearman/{s}", f"Spearman ρ of {_SCORE_NAMES.get(s, s)}", (-1.0, 1.0), "vlag")
       for s in PROB_SCORES},
}

#: The measures drawn as heatmaps (all are written as tables; four = one page): the headline divergence, the
#: agreement of decisions and the rank agreement of total and epistemic uncertainty.
HEATMAP_MEASURES = ("js", "agree", "spearman/entropy", "spearman/mutual_info")

#: Splits drawn as heatmaps: the test points (every split's matrices are written as tables and linked from the
#: report; drawing each OOD set too would triple the drawing time for figures few read).
HEATMAP_SPLITS = ("test",)

#: Families (``record["family"]``; the method name for records without one) of the NTK-ensemble variants in the
#: headline, and the reference families → display name. Matched exactly, never by substring.
NTK_FAMILIES = ("ntk", "ntk_ensemble")
REFERENCE_FAMILIES = {"laplace": "Laplace", "gp": "GP", "ensemble": "deep ensemble", "deep_ensemble": "deep ensemble",
                      "reference": "HMC"}

_SAFE = re.compile(r"[^0-9A-Za-z._=-]+")


def safe_name(text: str) -> str:
    """A file-name-safe version of a dataset, split or measure name ("/" and other punctuation → "_")."""
    return _SAFE.sub("_", str(text)).strip("_") or "_"


def load_runs(
    root: str | Path, datasets: Iterable[str] | str | None = None, methods: Iterable[str] | str | None = None
) -> dict[str, dict[int, dict[str, dict]]]:
    """Group a store's ``ok`` records into matched runs: dataset → seed → method label → record.

    Dataset and method names are the leaderboard's (``ntkbayes.results.cells``: the suite's dataset and method
    labels, with a short hash where one label covers different options or parameters), so runs match only on
    identical data and tables line up with the leaderboard. ``datasets`` filters by dataset label or name,
    ``methods`` by method label or name; each given name must match something, or ``UserError`` names it.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"results directory {root} does not exist")
    try:
        records = [r for r in _results.records(root) if r["status"] == STATUS_OK]
    except ValueError as e:
        raise UserError(str(e)) from None
    if not records:
        raise UserError(f"{root}: no 'ok' records in {root / 'records.jsonl'}")
    names = _results.cells(records).set_index("run_id")
    runs: dict[str, dict[int, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    aliases: dict[str, set[str]] = defaultdict(set)  # dataset → names it answers to
    for r in records:
        ds, label = names.loc[r["run_id"], "dataset"], names.loc[r["run_id"], "method"]
        runs[ds][int(r["seed"])][label] = {**r, "family": names.loc[r["run_id"], "family"]}
        aliases[ds] |= {ds, str(r.get("dataset_label") or r["dataset"]), str(r["dataset"])}
    runs = {k: dict(v) for k, v in runs.items()}
    if datasets is not None:
        wanted = set(_as_list(datasets))
        unknown = sorted(d for d in wanted if not any(d in aliases[k] for k in runs))
        if unknown:
            raise UserError(f"unknown dataset {', '.join(map(repr, unknown))} in {root}; "
                            f"available: {', '.join(sorted(runs))}")
        runs = {k: v for k, v in runs.items() if aliases[k] & wanted}
    if methods is not None:
        wanted = set(_as_list(methods))
        seen = {(lab, rec["method"]) for per in runs.values() for ms in per.values() for lab, rec in ms.items()}
        unknown = sorted(m for m in wanted if not any(m in pair for pair in seen))
        if unknown:
            raise UserError(f"unknown method {', '.join(map(repr, unknown))} in {root}; "
                            f"available: {', '.join(sorted({lab for lab, _ in seen}))}")
        runs = {
            d: {s: {lab: rec for lab, rec in ms.items() if lab in wanted or rec["method"] in wanted}
                for s, ms in per.items()}
            for d, per in runs.items()
        }
    return runs


def _as_list(value: Iterable[str] | str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def load_predictives(store: ResultsStore, record: Mapping) -> dict[str, Predictive]:
    """Split name ("test", "ood_<set>") → Predictive of one run's saved predictions."""
    test, _, ood = store.load_predictions(record["run_id"])
    return {"test": test, **{f"ood_{name}": pred for name, pred in ood.items()}}


def _mean_over_seeds(per_seed: list[dict[tuple[str, str], float]], labels: list[str]) -> tuple[pd.DataFrame, ...]:
    pos = {lab: i for i, lab in enumerate(labels)}
    total = np.zeros((len(labels), len(labels)))
    count = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for cells in per_seed:
        for (a, b), value in cells.items():
            if not math.isnan(value):
                total[pos[a], pos[b]] += value
                count[pos[a], pos[b]] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return (pd.DataFrame(mean, index=labels, columns=labels), pd.DataFrame(count, index=labels, columns=labels))


def _self_distance(cache: dict, key: tuple[str, str], pred: Predictive) -> torch.Tensor | None:
    """E‖X − X'‖ per point of one method's members, computed once per (method, split), not once per pair."""
    if key not in cache:
        sampled = pred.num_members >= MIN_MEMBERS_FOR_DISTRIBUTION
        cache[key] = mean_pairwise_distance(pred.member_probs) if sampled else None
    return cache[key]


def compare_dataset(store: ResultsStore, seeds: Mapping[int, Mapping[str, dict]]) -> dict[str, pd.DataFrame]:
    """Matrices of one dataset: ``"<split>/<measure>"`` → DataFrame (M × M), averaged over seeds.

    Also ``"<split>/n_seeds"``: for each pair, the number of seeds in which both methods have predictions.
    """
    labels = sorted({lab for ms in seeds.values() for lab in ms})
    cells: dict[str, list[dict[tuple[str, str], float]]] = defaultdict(list)
    pairs_per_split: dict[str, list[dict[tuple[str, str], float]]] = defaultdict(list)
    for seed in sorted(seeds):
        preds = {lab: load_predictives(store, rec) for lab, rec in seeds[seed].items()}
        cache: dict[tuple[str, str], torch.Tensor | None] = {}

        splits = sorted({s for p in preds.values() for s in p})
        for split in splits:
            have = [lab for lab in labels if lab in preds and split in preds[lab]]
            seed_cells: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
            present = {}
            for i, a in enumerate(have):
                for b in have[i:]:
                    pa, pb = preds[a][split], preds[b][split]
                    if pa.member_probs.shape[1:] != pb.member_probs.shape[1:]:
                        raise ValueError(f"seed {seed}, split {split}: {a!r} and {b!r} predicted on different "
                                         f"points ({tuple(pa.member_probs.shape)} vs {tuple(pb.member_probs.shape)})")
                    selfs = (_self_distance(cache, (a, split), pa), _self_distance(cache, (b, split), pb))
                    res = compare(pa, pb, self_distances=selfs)
                    flipped = {**res, "kl_ab": res["kl_ba"], "kl_ba": res["kl_ab"]}
                    for name, (key, *_rest) in MATRIX_MEASURES.items():
                        seed_cells[name][(a, b)] = res[key]
                        seed_cells[name][(b, a)] = flipped[key]
                    present[(a, b)] = present[(b, a)] = 1.0
            for name, values in seed_cells.items():
                cells[f"{split}/{name}"].append(values)
            pairs_per_split[split].append(present)
    out = {}
    for key, per_seed in cells.items():
        out[key] = _mean_over_seeds(per_seed, labels)[0]
    for split, per_seed in pairs_per_split.items():
        out[f"{split}/n_seeds"] = _mean_over_seeds(per_seed, labels)[1]
    return out


def headline_tables(
    results: Mapping[str, Mapping[str, pd.DataFrame]], families: Mapping[str, str] | None = None
) -> dict[str, pd.DataFrame | str]:
    """Per dataset, how close each NTK-ensemble variant's predictive is to Laplace, GP and deep-ensemble runs.

    Args:
        results: dataset → matrices (``compare_dataset``).
        families: method label → family (``record["family"]``; ``ntkbayes.results.cells``); a label not in it
            counts as the family named like its method (the label up to "[").

    Rows (index "NTK variant") per (variant, reference method): JS, TV, top-1 agreement and Spearman ρ of mutual
    information on test points, JS and ρ(MI) averaged over the OOD sets, and ★ in ``closest`` for the reference
    with the smallest test JS for that variant. A dataset without NTK variants or references maps to a note (str).
    """
    families = dict(families or {})
    out: dict[str, pd.DataFrame | str] = {}
    for dataset, mats in results.items():
        labels = list(mats["test/js"].index) if "test/js" in mats else []
        fam = {lab: families.get(lab, lab.split("[", 1)[0]) for lab in labels}
        ntk = [lab for lab in labels if fam[lab] in NTK_FAMILIES]
        refs = [(lab, REFERENCE_FAMILIES[fam[lab]]) for lab in labels if fam[lab] in REFERENCE_FAMILIES]
        if not ntk or not refs:
            out[dataset] = ("no ntk_ensemble run" if not ntk else "no Laplace, GP or deep-ensemble run") + \
                " on this dataset; nothing to summarize."
            continue
        ood_splits = sorted({k.split("/")[0] for k in mats if k.startswith("ood_")})
        rows = []
        for v in ntk:
            best = min(refs, key=lambda r: _nan_high(mats["test/js"].loc[v, r[0]]))[0]
            for ref, ref_family in refs:
                row = {"NTK variant": v, "reference": ref, "family": ref_family,
                       "JS test": mats["test/js"].loc[v, ref], "TV test": mats["test/tv"].loc[v, ref],
                       "agree test": mats["test/agree"].loc[v, ref],
                       "ρ MI test": mats["test/spearman/mutual_info"].loc[v, ref]}
                if ood_splits:
                    row["JS OOD"] = _nanmean([mats[f"{s}/js"].loc[v, ref] for s in ood_splits])
                    row["ρ MI OOD"] = _nanmean([mats[f"{s}/spearman/mutual_info"].loc[v, ref] for s in ood_splits])
                row["closest"] = "★" if ref == best else ""
                rows.append(row)
        table = pd.DataFrame(rows).set_index("NTK variant")
        table.attrs["ood_sets"] = [s[4:] for s in ood_splits]
        out[dataset] = table
    return out


HEADLINE_INTRO = (
    "Jensen–Shannon divergence (JS, nats, 0 = identical, ≤ log 2 ≈ 0.693) and total variation (TV) between "
    "predictive means, top-1 agreement, and Spearman ρ of the mutual information (epistemic uncertainty) over "
    "points, mean over seeds. ★ = the closest reference (smallest test JS) for that NTK variant."
)


def headline(results: Mapping[str, Mapping[str, pd.DataFrame]], families: Mapping[str, str] | None = None) -> str:
    """Markdown answering at a glance: how close is each NTK-ensemble variant to Laplace, GP and deep ensembles?
    (``headline_tables`` as Markdown.)"""
    lines = ["# How close are NTK ensembles to Bayesian references?", "", HEADLINE_INTRO, ""]
    for dataset, table in headline_tables(results, families).items():
        lines.append(f"## {dataset}\n")
        if isinstance(table, str):
            lines.append(f"_{table}_\n")
            continue
        lines.append(markdown_table(table, "NTK variant"))
        if table.attrs.get("ood_sets"):
            lines.append(f"OOD columns: mean over {', '.join(table.attrs['ood_sets'])}.\n")
    return "\n".join(lines)


def _nan_high(v: float) -> float:
    return math.inf if math.isnan(float(v)) else float(v)


def _nanmean(values: list[float]) -> float:
    finite = [float(v) for v in values if not math.isnan(float(v))]
    return sum(finite) / len(finite) if finite else float("nan")


def write_matrices(out_dir: Path, mats: Mapping[str, pd.DataFrame]) -> list[Path]:
    """Write every matrix as ``<split>__<measure>.csv`` (full precision) and ``.md``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, df in mats.items():
        split, measure = key.split("/", 1)
        stem = out_dir / f"{safe_name(split)}__{safe_name(measure)}"
        df.to_csv(stem.with_suffix(".csv"), index_label="method", float_format="%.17g")
        title = MATRIX_MEASURES.get(measure, (None, "seeds with both methods"))[1]
        text = f"# {title} — {split}\n\nrow a, column b = measure(a, b), mean over seeds\n\n"
        stem.with_suffix(".md").write_text(text + markdown_table(df, "method"))
        paths += [stem.with_suffix(".csv"), stem.with_suffix(".md")]
    return paths


def heatmap_figures(out: Path, dataset: str, mats: Mapping[str, pd.DataFrame]) -> list[Path]:
    """Heatmaps of ``HEATMAP_MEASURES``, one figure per split, as ``out/figures/compare_<dataset>_<split>``."""
    from ntkbayes.report.heatmaps import comparison_heatmaps

    paths = []
    for split in sorted({k.split("/", 1)[0] for k in mats} & set(HEATMAP_SPLITS)):
        panels, styles = {}, {}
        for measure in HEATMAP_MEASURES:
            df = mats.get(f"{split}/{measure}")
            if df is None or df.isna().all().all():
                continue
            _, title, lim, cmap = MATRIX_MEASURES[measure]
            panels[title] = df
            styles[title] = {"cmap": cmap, "vmin": lim[0], "vmax": lim[1]}
        if panels:
            where = "test points" if split == "test" else f"OOD set {split[4:]}"
            paths += comparison_heatmaps(panels, heatmap_stem(out, dataset, split), styles=styles,
                                         title=f"{dataset}: method-to-method comparison on {where}")
    return paths


def heatmap_stem(out: Path, dataset: str, split: str) -> Path:
    """``out/figures/compare_<dataset>_<split>`` (no suffix)."""
    return Path(out) / "figures" / f"compare_{safe_name(dataset)}_{safe_name(split)}"


def compare_dir(out: Path, dataset: str) -> Path:
    """``out/compare/<dataset>``: where a dataset's matrices are written."""
    return Path(out) / "compare" / safe_name(dataset)


def read_matrices(out: str | Path, dataset: str) -> dict[str, pd.DataFrame]:
    """Read back the matrices ``write_matrices`` wrote for a dataset: ``"<split>/<measure>"`` → DataFrame."""
    known = {safe_name(m): m for m in (*MATRIX_MEASURES, "n_seeds")}
    mats = {}
    for path in sorted(compare_dir(Path(out), dataset).glob("*__*.csv")):
        split, measure = path.stem.split("__", 1)
        if measure in known:
            mats[f"{split}/{known[measure]}"] = pd.read_csv(path, index_col=0)
    return mats


def compare_store(
    dir: str | Path,
    datasets: Iterable[str] | str | None = None,
    methods: Iterable[str] | str | None = None,
    *,
    out_dir: str | Path | None = None,
    figures: bool = True,
) -> dict[str, dict[str, pd.DataFrame]]:
    """Compare every pair of methods on every dataset of a results store, and write tables, summary and heatmaps.

    Args:
        dir: the results directory (records.jsonl + predictions/).
        datasets: dataset labels or names to include; default all.
        methods: method labels or names to include; default all.
        out_dir: where ``compare/`` and ``figures/`` go; default ``dir``.
        figures: also draw the heatmaps.

    Returns:
        dataset → ``"<split>/<measure>"`` → DataFrame (M × M, method labels), split "test" or "ood_<set>".
    """
    root = Path(dir)
    out = Path(out_dir) if out_dir is not None else root
    runs = load_runs(root, datasets, methods)
    store = ResultsStore(root)
    results: dict[str, dict[str, pd.DataFrame]] = {}
    for dataset in sorted(runs):
        seeds = {s: ms for s, ms in runs[dataset].items() if ms}
        if not seeds:
            continue
        mats = compare_dataset(store, seeds)
        results[dataset] = mats
        write_matrices(compare_dir(out, dataset), mats)
        if figures:
            heatmap_figures(out, dataset, mats)
    (out / "compare").mkdir(parents=True, exist_ok=True)
    families = {lab: rec["family"] for per in runs.values() for ms in per.values() for lab, rec in ms.items()}
    (out / "compare" / "summary.md").write_text(headline(results, families))
    return results


__all__ = [
    "HEATMAP_MEASURES",
    "HEATMAP_SPLITS",
    "MATRIX_MEASURES",
    "compare_dataset",
    "compare_dir",
    "compare_store",
    "headline",
    "headline_tables",
    "heatmap_figures",
    "heatmap_stem",
    "load_predictives",
    "load_runs",
    "format_number",
    "markdown_table",
    "read_matrices",
    "safe_name",
    "write_matrices",
]
