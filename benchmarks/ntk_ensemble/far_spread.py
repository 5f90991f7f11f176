"""Far-OOD logit spread of the NTK ensemble against the GP-Laplace predictive with kernel Θ/κ (docs/ntk_ensemble.md).

Usage: python benchmarks/ntk_ensemble/far_spread.py DATASET B_STD LAMBDA [MEMBERS]
e.g.   python benchmarks/ntk_ensemble/far_spread.py moons 1.0 1e-3 8
Analytic-kernel ensemble, seed 0; spreads are sd over members (or the predictive sd) averaged over far points and
classes; AUROC of the ensemble's mutual information, far against test points.
"""

from __future__ import annotations

import sys

import torch

from ntkbayes import data, methods
from ntkbayes.ntk import posterior, solve
from ntkbayes.ntk.analytic import mlp_kernels, mlp_kernels_diag


def mutual_info(logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits, -1)
    pm = p.mean(0)
    ent = lambda q: -(q * q.clamp_min(1e-300).log()).sum(-1)  # noqa: E731
    return ent(pm) - ent(p).mean(0)


def main(dataset: str, b_std: str, lam: str, members: str = "8") -> None:
    torch.set_num_threads(1)
    b, lam_, S = float(b_std), float(lam), int(members)
    d = data.load(dataset, seed=0)
    xf, xt = d.ood["far"].flatten(1).double(), d.train.x.flatten(1).double()
    model = methods.create("ntk_ensemble", mode="kernel", kernel="analytic", members=S, b_std=b,
                           weight_decay=lam_).fit(d, seed=0)
    logits = model.member_logits(xf).double()                                   # (S, M, C)
    f0, ntk_fx = model._analytic_prior_at(xf)                                   # f0 draws, Θ(x*, X)
    trained = logits - f0                                                       # Θ(x*, X) β
    n, kappa, args = xt.shape[0], lam_ * xt.shape[0], model._kernel_args()
    nngp_d, ntk_d = mlp_kernels_diag(xf, **args)
    _, ntk = mlp_kernels(xt, **args)
    Y = torch.nn.functional.one_hot(d.train.y, d.num_classes).double()
    res = solve.solve_ntk_classifier(ntk, torch.zeros(1, n, d.num_classes, dtype=torch.float64), Y, lam_)
    mean, cov = posterior.predict(res, ntk_fx.double(), ntk_d)
    gp_sd = cov.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()
    acc = float((model.predict(d.test.x).probs.argmax(-1) == d.test.y).float().mean())
    s_in, s_out = mutual_info(model.member_logits(d.test.x).double()), mutual_info(logits)
    auroc = float((s_out[:, None] > s_in[None, :]).double().mean()
                  + 0.5 * (s_out[:, None] == s_in[None, :]).double().mean())
    print(f"{dataset} b_std={b} λ={lam_:g} κ={kappa:.3g} S={S} test acc {acc:.3f}, far |x| median "
          f"{float(xf.norm(dim=1).median()):.1f}")
    print(f"  ensemble logit sd {float(logits.std(0).mean()):.2f}; f0 sd {float(f0.std(0).mean()):.2f} "
          f"(NNGP √K {float(nngp_d.sqrt().mean()):.2f}); trained part sd {float(trained.std(0).mean()):.2f}, "
          f"|mean| {float(trained.mean(0).abs().mean()):.2f}")
    print(f"  GP-Laplace (Θ/κ) predictive sd {float(gp_sd.mean()):.2f} (prior √(Θ/κ) "
          f"{float((ntk_d / kappa).sqrt().mean()):.2f}), |mean| {float(mean.abs().mean()):.2f}; "
          f"ensemble far MI-AUROC {auroc:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
