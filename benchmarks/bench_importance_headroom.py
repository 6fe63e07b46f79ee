"""Headroom analysis for exact importance on InceptionV1 ``mixed5a``: how tight must a new bound be?

The fast path's time is almost all exact 3×3/5×5 ``mixed5b`` convolutions for the (image, feature)
pairs that the cheap bounds leave undecided (see ``bench_importance.py``). Any faster exact method
must decide most of those pairs without the convolutions. This script measures what a bound would
have to achieve, on the same synthetic set-up as ``bench_importance.py``.

For each undecided pair it computes the exact change of every logit and splits the 3×3/5×5 branch
changes into the part that is linear in the bottleneck change (``mean_pos([q > 0] ⊙ conv(Δb))``, which
costs about a ninth of the convolution via a per-image adjoint) and the ReLU-crossing remainder. It
then counts the pairs that would be decided if the linear part were known exactly and the remainder
were bounded by ``f ×`` its true size, for several looseness factors ``f``. The baseline in the same
run is the existing finer bound (tier 2).

**Split remainder.** A buildable form of such a bound: per image, the share ``s`` of the branch
output's entries with the smallest baseline ``|r|`` (set ``S``, fixed per image) gets its exact
change (a conv restricted to those entries: about ``s`` of the convolution's multiply-adds); every
other entry's remainder lies in ``[0, Δr²/(4|r|)]`` (ReLU crossing needs ``|Δr| > |r|``), so along
``v`` it is at most ``max_o(v⁺_o / (4·HW·min_{pos∉S}|r_o|))·||Δr||²`` (likewise ``v⁻``). It is
counted with ``||Δr|| <= L·||Δq||`` (``L`` the convolution's operator norm: what a tier can use
without the convolution) and with the true ``||Δr||`` (what a tighter norm bound could reach).

    python benchmarks/bench_importance_headroom.py [--images 32]

Last line: ``undecided_pairs: N tier2_decided: T decided_at_1x: … decided_at_1000x: …
split_<s>_opnorm: … split_<s>_true_norm: …`` (tier2_decided: a fraction of the pairs the cheap bound
did not skip; the others: fractions of the pairs tier 2 leaves).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from autointerp.importance.fastpaths.inceptionv1.path import InceptionMixed5aPath
from autointerp.importance.topk import boundary_radius, decide_interval

FACTORS = (1, 10, 30, 100, 300, 1000)
SHARES = (0.01, 0.03, 0.1, 0.3)  # split remainder: shares of each image's entries computed exactly
K = 10


def split_remainders(
    r: torch.Tensor, dr: torch.Tensor, w: torch.Tensor, lab: torch.Tensor
) -> dict[float, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One branch's remainder along every ``v_j = W_t - W_j`` (see module doc, "Split remainder") for
    each share in :data:`SHARES`, for baseline ``r`` and change ``dr`` (P, O, H, W) float64, the branch's
    classifier columns ``w`` (J, O) and labels ``lab`` (P,): the exact part on ``S`` (P, J), and the
    factors (P, J) that bound the rest from above and below when multiplied by a bound on ``||Δr||²``."""
    p, o, h, wd = r.shape
    absr = r.abs()
    rem = F.relu(r + dr) - F.relu(r) - (r > 0) * dr  # >= 0, nonzero only where the sign flips
    wf = w.float()
    v = wf[lab][:, None, :] - wf[None]  # (P, J, O): float32 is plenty for this estimate
    v_up, v_down = v.clamp_min(0), (-v).clamp_min(0)
    out = {}
    for share in SHARES:
        tau = absr.flatten(1).kthvalue(max(1, int(share * o * h * wd)), dim=1).values  # the share's largest |r|
        in_s = absr <= tau[:, None, None, None]
        pooled = (rem * in_s).mean((2, 3))  # (P, O) the part on S, exactly
        exact = (pooled * w[lab]).sum(1)[:, None] - pooled @ w.T  # moves d_j by this
        rmin = torch.where(in_s, torch.inf, absr).flatten(2).amin(2)  # (P, O) smallest |r| outside S
        scale = (1.0 / (4 * h * wd * rmin)).float()[:, None, :]
        # × ||Δr||²: v⁺·Ē outside S moves d_j up, v⁻·Ē down
        out[share] = exact, (v_up * scale).amax(2).double(), (v_down * scale).amax(2).double()
    return out


def main() -> None:
    import bench_importance  # the same synthetic case as the speed benchmark

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    case = bench_importance.synthetic_case(args.images, args.seed)
    model, valid, acts, z = case.model, case.valid, case.acts32, case.logits
    labels, ablation = case.labels, case.ablation
    # tier 2 alone: the baseline this analysis refers to
    path = InceptionMixed5aPath(model, int8=False, sparse=False)
    state = path.prepare(acts)
    tau = boundary_radius(z, labels, path.W, K, valid)
    b_all, c_all = torch.nonzero(~(path.tier1(acts, ablation, torch.arange(832)) < tau[:, None]), as_tuple=True)
    with torch.no_grad():  # baseline pre-activations, from the network's channel order (the state keeps its own)
        q3 = F.conv2d(F.relu(model.mixed5b_3x3_bottleneck_pre_relu_conv(acts)), path.k3.weight, path.k3.bias, padding=1)
        q5 = F.conv2d(F.relu(model.mixed5b_5x5_bottleneck_pre_relu_conv(acts)), path.k5.weight, path.k5.bias, padding=2)
    w = path.W.double()
    n_cand = len(b_all)
    tier2 = 0
    decided = dict.fromkeys(FACTORS, 0)
    split = {(sh, kind): 0 for sh in SHARES for kind in ("opnorm", "true_norm")}
    for s in range(0, n_cand, 256):
        b, c = b_all[s : s + 256], c_all[s : s + 256]
        res = path.evaluate(state, acts, z, labels, b, c, ablation, K, valid)
        tier2 += int(res.bounded.sum())
        keep = ~res.bounded
        b, c = b[keep], c[keep]
        if not len(b):
            continue
        with torch.no_grad():
            u = path.rank1_update(state, acts, b, c, ablation)  # the path's own rank-1 step
            # the bottleneck changes back in the network's channel order (the state keeps its own per image)
            dq3, dq5 = (torch.empty_like(d).scatter_(3, o[b][:, None, None, :].expand_as(d), d)
                        for d, o in ((u.dq3, state.order3), (u.dq5, state.order5)))  # fmt: skip
            bound3 = dq3.flatten(1).double().norm(dim=1) * path.l3  # ||Δr|| <= L·||Δq||
            bound5 = dq5.flatten(1).double().norm(dim=1) * path.l5
            dq3 = F.conv2d(dq3.permute(0, 3, 1, 2), path.k3.weight, None, padding=1)
            dq5 = F.conv2d(dq5.permute(0, 3, 1, 2), path.k5.weight, None, padding=2)
            lin3, lin5 = ((q3[b] > 0) * dq3).mean((2, 3)), ((q5[b] > 0) * dq5).mean((2, 3))
            rem3 = (F.relu(q3[b] + dq3) - F.relu(q3[b])).mean((2, 3)) - lin3
            rem5 = (F.relu(q5[b] + dq5) - F.relu(q5[b])).mean((2, 3)) - lin5
            dh1, dhp = u.h1 - state.h1[b], u.hp - state.hp[b]
        lab = labels[b]
        z_lin = z[b].double() + torch.cat((dh1, lin3, lin5, dhp), 1).double() @ w.T
        z_rem = torch.cat((torch.zeros_like(dh1), rem3, rem5, torch.zeros_like(dhp)), 1).double() @ w.T
        margin = z_lin.gather(1, lab[:, None]) - z_lin
        true_rem = (z_rem.gather(1, lab[:, None]) - z_rem).abs()
        for f in FACTORS:
            slack = true_rem * f + 1e-9  # what each margin may move by
            decided[f] += int(decide_interval(margin - slack, margin + slack, lab, valid, K)[0].sum())
        branches = ((q3[b].double(), dq3.double(), w[:, 384:768], bound3),
                    (q5[b].double(), dq5.double(), w[:, 768:896], bound5))  # fmt: skip
        parts = [(split_remainders(r, dr, wb, lab), bound, dr.flatten(1).norm(dim=1))
                 for r, dr, wb, bound in branches]  # fmt: skip
        for sh in SHARES:
            for kind in ("opnorm", "true_norm"):
                mid, up, down = margin.clone(), torch.zeros_like(margin), torch.zeros_like(margin)
                for per_share, bound, true_norm in parts:
                    ex, u_, d_ = per_share[sh]
                    sq = (bound if kind == "opnorm" else true_norm)[:, None] ** 2
                    mid, up, down = mid + ex, up + u_ * sq, down + d_ * sq
                split[sh, kind] += int(decide_interval(mid - down, mid + up, lab, valid, K)[0].sum())
    undecided = n_cand - tier2
    print(f"images: {args.images} from {case.source}; model: rescaled random InceptionV1 (as bench_importance.py)")
    print(f"pairs: {args.images * 832}; not skipped by the cheap bound: {n_cand}; decided by tier 2: {tier2}; "
          f"left for the exact convolutions: {undecided}")  # fmt: skip
    for f in FACTORS:
        print(f"exact linear part + remainder bound {f}x its true size: decides {decided[f] / max(undecided, 1):.4f}")
    for (sh, kind), n in split.items():
        print(f"exact linear part + split remainder ({sh:.0%} of entries exact, rest with the {kind}): "
              f"decides {n / max(undecided, 1):.4f}")  # fmt: skip
    figures = " ".join(f"decided_at_{f}x: {decided[f] / max(undecided, 1):.4f}" for f in FACTORS)
    figures += "".join(f" split_{sh}_{kind}: {n / max(undecided, 1):.4f}" for (sh, kind), n in split.items())
    print(f"undecided_pairs: {undecided} tier2_decided: {tier2 / max(n_cand, 1):.4f} {figures}")


if __name__ == "__main__":
    main()
