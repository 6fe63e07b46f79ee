"""Sparse exact tier: a convolution branch's change from a rank-1 part and a sparse correction.

Used by the InceptionV1 ``mixed5a`` path (:mod:`.path`) for the pairs
its cheap bounds leave open. Notation as in :mod:`.folded`: the branch output is
``relu(r + Δr)`` pooled over the ``HW`` positions, ``Δr = K * Δq`` the convolution (weights ``K``
(O, C, k, k), stride 1, "same" zero padding) of the bottleneck change
``Δq = relu(p + w δᵀ) - relu(p)`` of ablating one channel: ``p`` (C, H, W) the image's bottleneck
pre-activations, ``w`` (C,) the ablated channel's weight column, ``δ`` (H, W) its change.

**Split.** With each bottleneck channel's majority sign in the image, ``b[c] = 1`` when ``p[c, q] > 0``
at more than half the positions ``q`` (else 0),

    Δq = (b ⊙ w) δᵀ + S

and ``S`` is zero wherever ``p[c, q]`` has its channel's majority sign and the ablation does not
flip it: there ``Δq[c, q] = b[c]·w[c]·δ[q]``. So ``S`` lives on the image's minority-sign entries
(about a tenth of them on the benchmark) and on the few sign flips. Then

* ``K * ((b ⊙ w) δᵀ) = K_w * δ`` with ``K_w[o, t] = Σ_c K[o, c, t]·b[c]·w[c]``: one product of the
  (C,) vector ``b ⊙ w`` with the (C, k²·O) taps, and a one-channel convolution;
* ``K * S`` reads only the entries where some pair of the block has ``S ≠ 0``: per output position,
  the window entries in that support times their taps (a batched product over positions).

Their sum is ``Δr`` up to float32 rounding. ``K * S`` reads a small share of the window entries, so the
tier does a fraction of a convolution's multiply-adds, at a lower rate (gathers, small products).

**Rounding.** Every term of the two sums is a weight ``K[o, c, t]`` times an entry of ``(b ⊙ w) δᵀ``
or of ``S``, and reaches ``Δr`` through at most ``n = n_S + C + k² + 4`` roundings (``n_S`` the
window entries read per position): ``γ_n·||K_o||·(||b ⊙ w||·||δ_window|| + ||S_window||)`` per
output (Cauchy–Schwarz over the window). ``S``'s own roundings, and using ``wδ`` for the computed
``Δq`` where ``S`` is set to zero, add ``u·||K_o||·(||p_window|| + ||S_window|| + 3||w||·||δ_window||)``.
``relu(r + Δr)`` adds ``2u·(|r| + |Δr|)`` at most (``r``'s own computation and the addition).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from autointerp.importance.fastpaths.inceptionv1.compiled import compiled_or_eager
from autointerp.importance.rounding import SAFETY as _SAFETY
from autointerp.importance.rounding import U as _U

#: output positions are split into this many groups by how many window entries they read (fewer
#: padding entries than one group padded to the largest count: about 1/3 fewer multiply-adds)
GROUPS = 4
#: pairs per chunk of the products and the elementwise pass (their (HW, O, chunk) Δr stays in cache)
PAIR_CHUNK = 128


@dataclass
class _PositionGroup:
    positions: torch.Tensor  # (m,) output positions (row-major indices)
    flat: torch.Tensor  # (m·n,) per position, n window entries: rows of :meth:`SparseExactConv._padded_t`
    taps: torch.Tensor  # (m, O, n): their weights (zero for the padding entries)


@dataclass
class SparseChange:
    """A block of one image's pairs through :meth:`SparseExactConv.change`."""

    change: torch.Tensor  # (P, O) float32: pooled relu(r + Δr) - relu(r)
    error: torch.Tensor  # (P, O) float32: a bound on its rounding, per output
    pooled: torch.Tensor  # (P, O) float32: pooled relu(r + Δr), the branch's output after the ablation
    support: int  # window entries read by K * S per pair (summed over positions, padding included)


class SparseExactConv:
    """One convolution (``conv``: stride 1, "same" zero padding ``padding``) of the tier (module doc)."""

    def __init__(self, conv: nn.Conv2d, padding: int, spatial: tuple[int, int], compile: bool = False) -> None:
        w = conv.weight.detach().float()
        o, c, k, _ = w.shape
        if w.shape[3] != k or 2 * padding != k - 1:
            raise ValueError(f"expected a square kernel with 'same' padding, got {tuple(w.shape)} and {padding}")
        self.out_channels, self.in_channels, self.k, self.pad = o, c, k, padding
        h, wd = spatial
        self.spatial, self.hw = (h, wd), h * wd
        # K_w = (b ⊙ w) @ taps_by_channel: (C, k²·O), t = dy·k + dx
        self.taps_by_channel = w.permute(1, 2, 3, 0).reshape(c, k * k * o).contiguous()
        # a window entry (t, c) -> its weights K[:, c, t] (O,): (k²·C + 1, O), the last row zero (padding)
        self.taps_by_entry = torch.cat((w.permute(2, 3, 1, 0).reshape(k * k * c, o), torch.zeros(1, o)))
        # per output position (row-major) and tap t: the padded map's flat position index
        wp = wd + 2 * padding
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(wd), indexing="ij")
        dy, dx = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
        self.window = (ys.reshape(-1, 1) + dy.reshape(1, -1)) * wp + xs.reshape(-1, 1) + dx.reshape(1, -1)
        self.padded_positions = (h + 2 * padding) * wp
        self.row_norms = w.flatten(1).norm(dim=1) * _SAFETY  # ||K_o||
        self._split = compiled_or_eager(_split, (2,)) if compile else _split
        self._epilogue = compiled_or_eager(_epilogue, ((3, 2),)) if compile else _epilogue  # kernel (k², O, pairs)

    def _padded_t(self, x: torch.Tensor) -> torch.Tensor:
        """(P, H, W, C) -> (padded positions·C + 1, P): zero-padded map, flattened, pairs last, one zero
        entry appended."""
        n, h, w, c = x.shape
        p = self.pad
        out = x.new_zeros(self.padded_positions * c + 1, n)
        out[:-1].view(h + 2 * p, w + 2 * p, c, n)[p : p + h, p : p + w] = x.permute(1, 2, 3, 0)
        return out

    def _support_entries(self, support: torch.Tensor, order: torch.Tensor) -> tuple[list[_PositionGroup], int]:
        """The window entries in ``support`` (H, W, C) per output position, as groups of positions with
        similar counts (:data:`GROUPS`; each group padded to its largest count with the zero entries)."""
        c, kk = self.in_channels, self.k * self.k
        padded = self._padded_t(support[None].float())[:-1, 0] > 0  # (positions·C,)
        entries = (self.window[:, :, None] * c + torch.arange(c)).reshape(self.hw, kk * c)  # (HW, k²·C)
        inside = padded[entries]
        count = inside.sum(1)
        # each position's entries in support, compacted to the front of its row (ranks by cumulative sum)
        slot = inside.cumsum(1) - 1
        ranked = torch.argsort(count, descending=True)
        groups = []
        for positions in ranked.tensor_split(min(GROUPS, self.hw)):
            n, m = int(count[positions[0]]), len(positions)
            keep = inside[positions]
            at = (torch.arange(m)[:, None] * n + slot[positions])[keep]
            flat = torch.full((m * n,), self.padded_positions * c, dtype=torch.long)
            flat[at] = entries[positions][keep]
            pick = torch.arange(kk * c).expand(m, -1)[keep]
            rows = torch.full((m * n,), kk * c, dtype=torch.long)
            rows[at] = (pick // c) * c + order[pick % c]  # tap t, network channel
            taps = self.taps_by_entry.index_select(0, rows).view(m, n, self.out_channels)
            groups.append(_PositionGroup(positions, flat, taps.transpose(1, 2)))
        return groups, int(count.sum())

    def change(
        self,
        r: torch.Tensor,
        p: torch.Tensor,
        order: torch.Tensor,
        w: torch.Tensor,
        delta: torch.Tensor,
    ) -> SparseChange:
        """The pooled change for a block of one image's pairs: baseline output pre-activations ``r``
        (O, H, W), bottleneck pre-activations ``p`` (H, W, C) with channels in the image's order
        ``order`` (C,) (entry ``i`` is the network's channel ``order[i]``), and per pair the ablated
        channel's weight column ``w`` (P, C) and change ``delta`` (P, H, W), all in that order (the
        bottleneck change ``Δq = relu(p + w ⊗ δ) - relu(p)`` is formed here)."""
        kk, o = self.k * self.k, self.out_channels
        majority = (p > 0).sum((0, 1)) * 2 > self.hw  # (C,) b
        # a copy: torch.compile specialises a view's storage offset 0 (the first image of a batch) and would
        # compile a second graph for it, seconds of a worker's timed run when first met after the warm-up
        bw, s, support, s_norm = self._split(p.clone(), majority, w, delta)
        groups, entries = self._support_entries(support, order)
        positions = torch.cat([g.positions for g in groups])  # the order of Δr's rows below
        bounds = torch.tensor([0] + [len(g.positions) for g in groups]).cumsum(0).tolist()
        base = r.reshape(o, -1).T[positions]  # (HW, O)
        window = self.window[positions].reshape(-1)
        bw_net = torch.zeros_like(bw).index_copy_(1, order, bw)
        outputs = []
        for a in range(0, len(w), PAIR_CHUNK):  # pairs innermost from here on, in cache-sized chunks
            z = slice(a, a + PAIR_CHUNK)
            n_pairs = len(w[z])
            # K * S: per output position, (O, n) taps @ (n, P) entries
            s_t = self._padded_t(s[z])
            dr = s_t.new_empty(self.hw, o, n_pairs)
            for g, lo, hi in zip(groups, bounds[:-1], bounds[1:], strict=True):
                torch.bmm(g.taps, s_t.index_select(0, g.flat).view(hi - lo, g.taps.shape[2], n_pairs), out=dr[lo:hi])
            # K_w * δ: one-channel convolution with each pair's kernel K_w (k², O, P)
            kernel = (self.taps_by_channel.T @ bw_net[z].T).view(kk, o, n_pairs)
            windows = self._padded_t(delta[z, ..., None])[:-1].index_select(0, window).view(self.hw, kk, n_pairs)
            outputs.append(self._epilogue(base, dr, windows, kernel))
        pooled, change, dr_abs = (torch.cat(t, 1).T for t in zip(*outputs, strict=True))
        # mean over positions of a window norm <= k·||x|| / √HW (each entry is in at most k² windows)
        spread = self.k / self.hw**0.5
        d_norm, w_norm = delta.flatten(1).norm(dim=1), w.norm(dim=1)
        # every term K·S and K·(b ⊙ w)·δ reaches Δr through at most this many roundings
        depth = max((g.taps.shape[2] for g in groups), default=0) + self.in_channels + kk + 4
        sums = _gamma(depth) * (s_norm + bw.norm(dim=1) * d_norm)
        # S's own roundings, and Δq against wδ where S is set to zero: u(|p| + |S| + 3|wδ|) per entry
        sums = sums + 1.01 * _U * (p.norm() + s_norm + 3 * w_norm * d_norm)
        error = self.row_norms[None] * (sums * spread)[:, None] + 2 * _U * (base.abs().mean(0)[None] + dr_abs)
        return SparseChange(change, error * _SAFETY, pooled, entries)


def _gamma(n: int) -> float:
    """``γ_n = n·u / (1 - n·u)`` for float32, rounded up: the relative error of an n-deep sum of products."""
    return n * _U / (1 - n * _U) * 1.01


def _split(
    p: torch.Tensor, majority: torch.Tensor, w: torch.Tensor, delta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``b ⊙ w`` (P, C), ``S`` (P, H, W, C), its support over the block (H, W, C) and its norms (P,)."""
    bw = w * majority
    change = w[:, None, None, :] * delta[..., None]
    dq = torch.relu(p + change) - torch.relu(p)  # Δq, as bottleneck_change forms it
    # S = Δq - (b ⊙ w) δᵀ, zero where p and p + wδ are both positive in a majority-positive channel
    # (Δq computed there is wδ up to its rounding, in the error bound) and Δq = 0 = b·w·δ where both
    # are not positive in a majority-negative one
    linear = majority & (p > 0) & (p + change > 0)
    s = torch.where(linear, 0.0, dq - majority * change)
    return bw, s, (s != 0).any(0), s.square().sum((1, 2, 3)).sqrt()


def _epilogue(
    base: torch.Tensor, dr_sparse: torch.Tensor, windows: torch.Tensor, kernel: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``Δr`` = ``dr_sparse`` (HW, O, P) + the one-channel convolutions (``windows`` (HW, k², P) of δ
    times ``kernel`` (k², O, P)); pooled ``relu(r + Δr)``, its change from ``relu(r)`` and ``mean|Δr|``
    (O, P) each, ``r`` = ``base`` (HW, O)."""
    dr = dr_sparse
    for t in range(kernel.shape[0]):  # unrolled: one fused loop
        dr = dr + windows[:, t, None, :] * kernel[t]
    after = torch.relu(base[..., None] + dr)
    return after.mean(0), (after - torch.relu(base)[..., None]).mean(0), dr.abs().mean(0)
