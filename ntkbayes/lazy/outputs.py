"""Outputs of the lazy-regime study: log-log slopes, verdicts by stated rules, tables, figures, README."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ntkbayes.lazy.config import LazyConfig
from ntkbayes.ntk.solve import Anchor
from ntkbayes.report.comparison import markdown_table
from ntkbayes.seeding import member_seeds

#: Measures whose log-log slope against width is fitted (per dataset and regime, over all member rows).
SLOPE_METRICS = ("kernel_drift", "lin_gap_max_logit", "lin_gap_tv_mean", "param_movement")
#: Verdict rule: a measure "decreases with width" when its fitted slope plus two standard errors is below 0.
SLOPE_SIGNIFICANCE = 2.0
#: Verdict rule: a trajectory measure "has converged" when it changed by less than this fraction over the last
#: quarter of the records (log-spaced in time); "keeps growing" when it grew by more.
PLATEAU_TOL = 0.05
#: Verdict rule: linearized and kernel modes "are the same function" when their member TV is below this (they
#: differ only by the L-BFGS tolerance of the linearized fit; λ = 0 smoothed converges slowly along small NTK
#: eigendirections).
SAME_FUNCTION_TV = 1e-2


def fit_slopes(sweep: pd.DataFrame) -> pd.DataFrame:
    """Least-squares slope of log(measure) against log(width) per dataset, regime and measure (all member rows
    with a positive value), with its standard error and the member-mean values at the smallest / largest width."""
    rows = []
    for (dataset, regime), part in sweep.groupby(["dataset", "regime"], sort=False):
        for metric in SLOPE_METRICS:
            ok = part[part[metric] > 0]
            if ok["width"].nunique() < 2:
                continue
            lx, ly = np.log(ok["width"].to_numpy(float)), np.log(ok[metric].to_numpy(float))
            slope, icpt = np.polyfit(lx, ly, 1)
            resid = ly - (slope * lx + icpt)
            sxx = ((lx - lx.mean()) ** 2).sum()
            se = math.sqrt((resid ** 2).sum() / max(len(lx) - 2, 1) / sxx) if len(lx) > 2 else math.nan
            means = part.groupby("width")[metric].mean()
            rows.append({"dataset": dataset, "regime": regime, "metric": metric, "slope": slope, "stderr": se,
                         "points": len(lx), "at_min_width": means.iloc[0], "at_max_width": means.iloc[-1]})
    return pd.DataFrame(rows)


# -- outputs ------------------------------------------------------------------------------------------------------
LABELS = {"kernel_drift": "kernel drift ‖Θ−Θ0‖/‖Θ0‖", "lin_gap_max_logit": "lin. gap max|f − f_lin|",
          "lin_gap_tv_mean": "lin. gap TV (mean)", "param_movement": "‖θ−θ0‖/‖θ0‖",
          "param_distance": "‖θ−θ0‖", "max_abs_logit": "max |logit|"}


def conventions(cfg: LazyConfig, device: str) -> dict[str, Any]:
    """The settings every number of the study depends on (written to conventions.json and the README)."""
    return {"suite": cfg.path, "datasets": list(cfg.datasets), "dataset_options": cfg.dataset_options,
            "seed": cfg.seed, "members": cfg.members, "member_seeds": member_seeds(cfg.seed, cfg.members),
            "num_train": cfg.num_train, "num_val": cfg.num_val, "num_test": cfg.num_test,
            "num_probe": cfg.num_probe, "probe": "first num_probe points of the training subset",
            "model": {**cfg.model, "parameterization": "ntk", "arch": "mlp"},
            "regimes": {r.label: dataclasses.asdict(r) for r in cfg.regimes},
            "objective": "mean CE over N + (λ/2)‖θ − θ_a‖², targets (1−ε)·onehot + ε/C (docs/math.md §0); κ = λN",
            "convergence": {**cfg.convergence, "optimizer": "full-batch L-BFGS (ntk_ensemble, float64)",
                            "tol_meaning": "stop when ‖∇L‖_∞ ≤ tol or the loss change ≤ 1e-10·max(1,|L|)"},
            "trajectory": {**cfg.trajectory, "optimizer": "plain full-batch GD, time t = step·lr"},
            "agreement": {**cfg.agreement, "kernel": "empirical NTK at θ0 (same θ0 as network/linearized)",
                          "tv": "½Σ_c|p_c − q_c| per test point and member; tv_ensemble_mean on mean predictives"},
            "kernel_drift": "‖Θ_T − Θ_0‖_F / ‖Θ_0‖_F, full (N,N,C,C) empirical NTK on the probe set",
            "lin_gap": "Taylor gap f(x;θ_T) − f_lin(x;θ_T) on the probe set (lin_gap_test_tv_mean: test points)",
            "slope": "least squares of log(measure) on log(width) over member rows",
            "device": device, "dtype": "float64", "torch_threads": torch.get_num_threads()}


def _figures(out: Path, frames: dict[str, pd.DataFrame]) -> list[Path]:
    from ntkbayes.report.figures import lazy_curves

    paths, sweep, traj, agree = [], frames["width_sweep"], frames["trajectory"], frames["agreement"]
    for metric in ("kernel_drift", "lin_gap_max_logit", "param_movement"):
        if not sweep.empty:
            df = sweep.rename(columns={"width": "x", metric: "y", "regime": "hue", "dataset": "facet"})
            paths += lazy_curves(df[["x", "y", "hue", "facet"]], out / "figures" / f"{metric}_vs_width", logx=True,
                                 logy=True, xlabel="width", ylabel=LABELS[metric], hue_title="regime",
                                 title=f"{LABELS[metric]} at convergence against width (±1 sd over members)")
    if not traj.empty:
        for stem, metrics in (("trajectory", ("kernel_drift", "max_abs_logit", "param_distance")),
                              ("trajectory_lin_gap", ("lin_gap_max_logit",))):
            parts = [traj.assign(facet=traj["dataset"] + ": " + LABELS[m], y=traj[m]) for m in metrics]
            df = pd.concat(parts).sort_values("dataset", kind="stable").rename(columns={"time": "x", "regime": "hue"})
            paths += lazy_curves(df[["x", "y", "hue", "facet"]], out / "figures" / stem, logx=True, logy=True,
                                 xlabel="training time t = step·lr", ylabel="value", hue_title="regime",
                                 title=f"Lazy measures along full-batch GD (width {int(traj['width'].iloc[0])})")
    if not agree.empty:
        df = agree.assign(facet=agree["dataset"] + ": " + agree["pair"]).rename(
            columns={"width": "x", "tv_mean": "y", "regime": "hue"})
        paths += lazy_curves(df[["x", "y", "hue", "facet"]], out / "figures" / "agreement_vs_width", logx=True,
                             logy=True, xlabel="width", ylabel="TV of member probabilities", hue_title="regime",
                             title="Agreement of network, linearized and kernel modes (test points)")
    return paths


def _traj_change(traj: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Member-mean ``metric`` at the record three quarters through and at the last record, and their ratio."""
    rows = []
    for (dataset, regime), part in traj.groupby(["dataset", "regime"], sort=False):
        means = part.groupby("time")[metric].mean()
        i = int(0.75 * (len(means) - 1))
        rows.append({"dataset": dataset, "regime": regime, "t_from": means.index[i], "t_to": means.index[-1],
                     "from": means.iloc[i], "to": means.iloc[-1], "ratio": means.iloc[-1] / means.iloc[i]})
    return pd.DataFrame(rows)


def _decreasing(slopes: pd.DataFrame, regime: str, metric: str) -> tuple[bool, str]:
    part = slopes[(slopes["regime"] == regime) & (slopes["metric"] == metric)]
    if part.empty:
        return False, "not measured"
    ok = bool(((part["slope"] + SLOPE_SIGNIFICANCE * part["stderr"].fillna(0.0)) < 0).all())
    text = "; ".join(f"{r.dataset} {r.slope:+.2f} ± {r.stderr:.2f} ({r.at_min_width:.3g} → {r.at_max_width:.3g})"
                     for r in part.itertuples())
    return ok, text


def findings(cfg: LazyConfig, frames: dict[str, pd.DataFrame]) -> list[str]:
    """Markdown bullets: each claim of the paper, the measured numbers and a verdict from the stated rules."""
    slopes, traj, agree = frames["slopes"], frames["trajectory"], frames["agreement"]
    out = []
    for r in cfg.regimes:
        if not r.kernel_solvable:
            continue
        d_ok, d_txt = _decreasing(slopes, r.label, "kernel_drift")
        g_ok, g_txt = _decreasing(slopes, r.label, "lin_gap_max_logit")
        verdict = "**agree**" if d_ok and g_ok else "**do not agree**" if not (d_ok or g_ok) else "**partly agree**"
        out.append(f"- *{r.label}* ({r.describe()}): the paper predicts lazy training (drift and linearization gap → 0 "
                   f"as width grows). Data {verdict}: drift slope {d_txt}; gap slope {g_txt}.")
        sweep = frames["width_sweep"]
        if not (d_ok and g_ok) and not sweep.empty:
            wide = sweep[(sweep["regime"] == r.label) & (sweep["width"] == sweep["width"].max())]
            out.append(f"  At width {int(wide['width'].max())}: ‖θ−θ0‖/‖θ0‖ = "
                       f"{wide['param_movement'].mean():.3g}, train NLL {wide['train_nll'].mean():.3g}, "
                       f"train accuracy {wide['train_acc'].mean():.3g}."
                       + (" With anchor 0 the penalty (λ/2)‖θ‖² at θ0 grows like the parameter count (∝ width in "
                          "NTK parameterization) while the data term stays O(1), so the optimum shrinks every weight "
                          "by O(1) — the network leaves its linearization instead of becoming lazier."
                          if r.anchor == Anchor.ZERO.value and r.reg > 0 else ""))
    for r in cfg.regimes:
        if r.kernel_solvable or traj.empty:
            continue
        logit = _traj_change(traj, "max_abs_logit")
        drift = _traj_change(traj, "kernel_drift")
        own = logit[logit["regime"] == r.label]
        others = logit[logit["regime"] != r.label]
        grows = bool((own["ratio"] > 1 + PLATEAU_TOL).all())
        settle = bool(((others["ratio"] - 1).abs() < PLATEAU_TOL).all()) if not others.empty else False
        dd = drift[drift["regime"] == r.label]
        out.append(f"- *{r.label}* ({r.describe()}): the paper predicts diverging logits and a breaking "
                   f"linearization. Along GD, max|logit| {'keeps growing' if grows else 'does not keep growing'} "
                   f"({', '.join(f'{o.dataset} ×{o.ratio:.3g}' for o in own.itertuples())} between t = "
                   f"{own['t_from'].iloc[0]:g} and "
                   f"{own['t_to'].iloc[0]:g}) and the kernel drift goes from "
                   f"{', '.join(f'{v:.3g}' for v in dd['from'])} to {', '.join(f'{v:.3g}' for v in dd['to'])} "
                   f"(datasets in the same order): "
                   f"data **{'agree' if grows else 'do not agree'}** "
                   f"on the divergence. The other regimes' max|logit| "
                   f"{'settle (change < 5 %)' if settle else 'do not all settle'} over the same window "
                   f"({', '.join(f'{o.regime} {o.dataset} ×{o.ratio:.3g}' for o in others.itertuples())}).")
        d_ok, d_txt = _decreasing(slopes, r.label, "kernel_drift")
        out.append(f"  At the gradient tolerance (a finite stopping point), its drift slope against width is {d_txt}.")
    if not agree.empty:
        a_sl = fit_slopes(agree.rename(columns={"tv_mean": "kernel_drift"}).assign(
            regime=agree["regime"] + " " + agree["pair"])[["dataset", "regime", "width", "member", "kernel_drift"]]
            .assign(lin_gap_max_logit=np.nan, lin_gap_tv_mean=np.nan, param_movement=np.nan))
        for r in cfg.agreement["regimes"]:
            ok, txt = _decreasing(a_sl, f"{r} network–linearized", "kernel_drift")
            lk = agree[(agree["regime"] == r) & (agree["pair"] == "linearized–kernel")]["tv_mean"].max()
            out.append(f"- Agreement, *{r}*: TV(network, linearized) against width: slope {txt} — "
                       f"{'**agrees**' if ok else '**does not agree**'} with the network approaching its linearization"
                       f". Linearized vs kernel: max member TV {lk:.2g} — "
                       + (f"the same function (rule: < {SAME_FUNCTION_TV:g})." if lk < SAME_FUNCTION_TV else
                          f"above the rule (< {SAME_FUNCTION_TV:g}): the L-BFGS fit of the linearized model stopped "
                          "short of the exact optimum the kernel mode computes, so TVs below this are at the "
                          "optimization floor."))
    return out


def write_outputs(cfg: LazyConfig, out: Path, frames: dict[str, pd.DataFrame], seconds: dict,
                  device: str) -> list[Path]:
    """CSV files, table.md, figures, conventions.json and README.md."""
    paths = []
    for key, df in frames.items():
        paths.append(out / f"{key}.csv")
        df.to_csv(paths[-1], index=False, float_format="%.6g")
    conv = conventions(cfg, device)
    conv["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    paths.append(out / "conventions.json")
    paths[-1].write_text(json.dumps(conv, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    sweep, agree = frames["width_sweep"], frames["agreement"]
    parts = [f"# Lazy-regime study: tables\n\nSuite `{cfg.path}`; conventions in `conventions.json`. Member means.\n"]
    if not frames["slopes"].empty:
        parts += ["## Log-log slope against width\n", _md_table(frames["slopes"].round(4)), ""]
    if not sweep.empty:
        cols = ["kernel_drift", "lin_gap_max_logit", "lin_gap_tv_mean", "param_movement", "max_abs_logit",
                "train_acc", "train_nll"]
        tab = sweep.groupby(["dataset", "regime", "width"], sort=False)[cols].mean().reset_index()
        tab["converged"] = sweep.groupby(["dataset", "regime", "width"], sort=False)["converged"].apply(
            lambda c: f"{int(c.fillna(False).astype(bool).sum())}/{len(c)}").to_numpy()
        parts += ["## At convergence, against width\n", _md_table(tab), ""]
    if not frames["trajectory"].empty:
        tr = frames["trajectory"]
        last = tr[tr["step"] == tr["step"].max()].groupby(["dataset", "regime"], sort=False)[
            ["time", "kernel_drift", "max_abs_logit", "param_distance", "lin_gap_max_logit", "loss"]].mean()
        parts += ["## End of the GD trajectory\n", _md_table(last.reset_index()), ""]
    if not agree.empty:
        tab = agree.groupby(["dataset", "regime", "width", "pair"], sort=False)[
            ["tv_mean", "tv_ensemble_mean", "max_abs_logit_diff"]].mean().reset_index()
        parts += ["## Agreement between modes (test points)\n", _md_table(tab), ""]
    paths.append(out / "table.md")
    paths[-1].write_text("\n".join(parts), encoding="utf-8")
    paths += _figures(out, frames)
    regimes = "\n".join(f"- `{r.label}`: {r.describe()}" for r in cfg.regimes)
    readme = [
        "# Lazy-regime study", "",
        f"Produced by `ntkbayes lazy {cfg.path} --out {out}` in {seconds['total'] / 60:.1f} min on {device} "
        f"({torch.get_num_threads()} torch thread(s); {os.cpu_count()} CPUs, load average "
        f"{seconds.get('load_average', math.nan):.1f} at the end: a shared machine is slower). Claims tested: "
        "Plenk et al., "
        "\"The Neural Tangent Kernel for "
        "Classification\" (2026), as summarized in docs/math.md (c).", "",
        "## Conventions", "",
        f"Datasets {', '.join(cfg.datasets)}: random subsets (seed {cfg.seed}) of N = {cfg.num_train} training, "
        f"{cfg.num_test} test points; probe set = the first {cfg.num_probe} training points. MLP in NTK "
        f"parameterization, depth {cfg.model['depth']}, {cfg.model['activation']}, σw = {cfg.model['w_std']}, "
        f"σb = {cfg.model['b_std']}, float64, {cfg.members} members (initializations) per cell. Objective: mean CE + "
        f"(λ/2)‖θ − θ_a‖², targets (1 − ε)·onehot + ε/C. Regimes:", "", regimes, "",
        f"At convergence: full-batch L-BFGS to ‖∇L‖_∞ ≤ {cfg.convergence['tol']:g} (at most "
        f"{cfg.convergence['max_iter']} iterations; `converged` in the tables), widths "
        f"{', '.join(map(str, cfg.convergence['widths']))}. Trajectory: plain GD, lr = {cfg.trajectory['lr']:g}, "
        f"{cfg.trajectory['steps']} steps, width {cfg.trajectory['width']}. Agreement: widths "
        f"{', '.join(map(str, cfg.agreement['widths']))}. Slopes: least squares of log(measure) on log(width); a "
        f"measure decreases with width when slope + {SLOPE_SIGNIFICANCE:g}·stderr < 0. For reference, the usual "
        "NTK perturbation theory gives drift and gap ∝ width^(-1/2) (slope −0.5).", "",
        "## Findings", "", *findings(cfg, frames), "",
        "## Limits", "",
        f"- Depth {cfg.model['depth']}, N = {cfg.num_train}, {cfg.members} initializations, "
        f"{len(cfg.convergence['widths'])} widths: chosen so that width 4096 fits the CPU budget; slopes carry the "
        "standard errors above and say nothing about other depths or data sizes.",
        "- \"At convergence\" is the L-BFGS tolerance. λ = 0 with one-hot targets has no optimum: its width-sweep "
        "rows are wherever the gradient fell below the tolerance (finite, tolerance-dependent logits).",
        "- The trajectory has a finite horizon: \"keeps growing\" and \"settles\" refer to the recorded window.",
        "- The linearized–kernel TV is the optimization floor of every mode comparison (the two are the same "
        "function at the exact optimum, docs/math.md (c)).", "",
        "## Files", "",
        "`table.md` (summary tables), `width_sweep.csv`, `slopes.csv`, `trajectory.csv`, `agreement.csv` (one row "
        "per member), `figures/` (`*_vs_width`, `trajectory`, `trajectory_lin_gap`, `agreement_vs_width`; PNG, and "
        "PDF where the figure settings write it), `conventions.json`.", ""]
    paths.append(out / "README.md")
    paths[-1].write_text("\n".join(readme), encoding="utf-8")
    return paths


def _md_table(df: pd.DataFrame) -> str:
    """``report.comparison.markdown_table`` with the first column as the row label."""
    first = df.columns[0]
    return markdown_table(df.set_index(first), index_name=str(first))
