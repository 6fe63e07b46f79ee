"""Fast exact path for InceptionV1 ``mixed5a`` (ablations evaluated through ``mixed5b`` + classifier).

The first operation of every ``mixed5b`` branch reads ``mixed5a`` through a 1×1 convolution (the
1×1, 3×3-bottleneck and 5×5-bottleneck branches) or a per-channel 3×3 max-pool (the pool branch), so
ablating channel ``c`` with change ``δ = target - a_c`` (H, W) is a rank-1 update of the branch
pre-activations: ``P' = P + w_c ⊗ δ``. Per pair the path works in four tiers:

1. (in the engine's bound pass) a scalar bound ``ρ ≥ ||Δh||`` from per-channel constants and the
   statistics ``mean|δ|``, ``||δ||₂``, ``mean|Δmaxpool|`` — no network evaluation at all;
2. the 1×1 and pool branches (which go straight to the average pool) evaluated exactly by the rank-1
   update, the 3×3/5×5 bottleneck changes ``Δb`` exactly, and ``||Δh_3x3|| ≤ ||conv3||·||Δb3||_F / √HW``
   with a sound operator-norm bound; the logits' change is then exact in the 1×1/pool coordinates and
   interval-bounded in the rest, which decides most remaining pairs;
2b. (when ``lowrank``: by default where the int8 tier is off or on one thread) both branches' changes from a rank-one
   fit of their bottleneck change, ``Δq = α ⊗ δ + S`` with the ablated channel's spatial change ``δ``:
   the rank-one part's pooled change exactly (one small product and a single-channel convolution per
   pair) and the rest within ``L·||S|| / √HW``, about a third of tier 2's radius
   (:mod:`.lowrank`); it decides most of the pairs tier 2 leaves, at a fraction of
   the sparse tier's cost per pair (and hands the 5×5 branch's interval to the int8 or
   the sparse tier). The 3×3 branch goes first, with the 5×5 branch's tier-2 radius; only the pairs
   that leaves open (about half) pay for the 5×5 branch, which costs about as much as the 3×3 one;
3. (when ``int8``) the 3×3 and 5×5 branch changes from int8 convolutions in exact integer arithmetic,
   with sound error bounds (:mod:`.quantized`): the linear part of each branch's
   pooled change is known to a small error and the ReLU-crossing remainder is bounded elementwise,
   which decides nearly all pairs tier 2 leaves, at about half the float32 convolutions' cost (their
   products with the classifier run in bfloat16, also with sound bounds:
   :mod:`.products`);
3b. (when ``sparse``: by default where the int8 tier is off) both branches' changes exactly, up to
   bounded float32 rounding, from a rank-1 part (each bottleneck channel's majority sign in the
   image) plus a sparse correction on the image's minority-sign entries and the ablation's sign
   flips (:mod:`.sparse`), cheaper than the float32 convolutions per pair.
   It decides every pair except those within rounding of the top-k boundary. After the
   rank-one tier it computes the 3×3 branch first, with the 5×5 branch's rank-one interval: that
   decides about two thirds of its pairs, and only the others pay for the 5×5 branch (about a third
   of the tier's cost);
4. the remaining pairs: the 3×3 and 5×5 convolutions of the updated bottlenecks, exactly as the
   network computes them. A pair whose ablated logits sit within float rounding of the top-k boundary
   is recomputed by the reference tail on the ablated activation, so counts equal the reference's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from autointerp.importance.ablation import Ablation
from autointerp.importance.engine import PairResult
from autointerp.importance.fastpaths.inceptionv1.bottleneck import BottleneckChange, bottleneck_change
from autointerp.importance.fastpaths.inceptionv1.compiled import compiled_or_eager
from autointerp.importance.fastpaths.inceptionv1.lowrank import RankOneConv
from autointerp.importance.fastpaths.inceptionv1.products import BoundedProduct, UpperProduct
from autointerp.importance.fastpaths.inceptionv1.quantized import (
    Int8Conv,
    image_blocks,
    int8_matmul_is_exact,
    int8_matmul_is_fast,
)  # fmt: skip
from autointerp.importance.fastpaths.inceptionv1.sparse import SparseExactConv
from autointerp.importance.lipschitz import conv_operator_norm
from autointerp.importance.rounding import SAFETY as _SAFETY
from autointerp.importance.topk import (
    class_subset,
    decide_interval,
    float_tolerance,
    logits_and_logprob_grad,
    pair_norms,
    topk_correct,
    true_logprob,
)  # fmt: skip

_PARTS = (
    "mixed5b_1x1_pre_relu_conv", "mixed5b_3x3_bottleneck_pre_relu_conv", "mixed5b_5x5_bottleneck_pre_relu_conv",
    "mixed5b_pool_reduce_pre_relu_conv", "mixed5b_3x3_pre_relu_conv", "mixed5b_5x5_pre_relu_conv",
    "softmax2_pre_activation_matmul",
)  # fmt: skip


def supports_inception_mixed5a(module: nn.Module, layer: str, spatial: tuple[int, int]) -> bool:
    """True when ``module`` is lucent's InceptionV1 studied at ``mixed5a`` with 7×7 maps (224 inputs)."""
    return layer == "mixed5a" and all(hasattr(module, p) for p in _PARTS) and tuple(spatial) == (7, 7)


def inception_parts(module: nn.Module) -> nn.Module:
    """The submodules of ``module`` that :func:`reference_tail` and :class:`InceptionMixed5aPath` read,
    copied into a plain container without hooks: a small picklable model for worker processes
    (:mod:`autointerp.importance.workers`)."""
    import copy

    parts = nn.Module()
    for name in _PARTS:
        part = copy.copy(getattr(module, name))  # shares the parameters; own hook dictionaries below
        part._forward_hooks, part._forward_pre_hooks, part._backward_hooks = {}, {}, {}  # type: ignore[assignment]
        part._forward_hooks_with_kwargs, part._forward_pre_hooks_with_kwargs = {}, {}  # type: ignore[assignment]
        setattr(parts, name, part)
    return parts.eval()


def reference_tail(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``mixed5a -> logits`` exactly as lucent's InceptionV1.forward computes it (pre-softmax)."""
    m = module
    relu = F.relu
    b1 = relu(m.mixed5b_1x1_pre_relu_conv(x))
    b3 = relu(m.mixed5b_3x3_bottleneck_pre_relu_conv(x))
    b5 = relu(m.mixed5b_5x5_bottleneck_pre_relu_conv(x))
    pool = F.max_pool2d(F.pad(x, (1, 1, 1, 1), value=float("-inf")), (3, 3), stride=(1, 1), padding=0)
    bp = relu(m.mixed5b_pool_reduce_pre_relu_conv(pool))
    q3 = relu(m.mixed5b_3x3_pre_relu_conv(F.pad(b3, (1, 1, 1, 1))))
    q5 = relu(m.mixed5b_5x5_pre_relu_conv(F.pad(b5, (2, 2, 2, 2))))
    cat = torch.cat((b1, q3, q5, bp), 1)
    pooled = F.avg_pool2d(cat, kernel_size=(7, 7), stride=(1, 1), padding=(0,), count_include_pad=False)
    return m.softmax2_pre_activation_matmul(torch.reshape(pooled, (-1, 1024)))


class ReferenceTail(nn.Module):
    """:func:`reference_tail` as a module (plain ReLU gradients, unlike lucent's redirected ReLU)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inception = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference_tail(self.inception, x)


def _maxpool3(x: torch.Tensor) -> torch.Tensor:
    """3×3 max-pool, stride 1, padded with -inf (as lucent's pool branch): the same values as
    ``F.max_pool2d``, as separable maxima of shifted views (faster on CPU for 7×7 maps)."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    rows = torch.maximum(torch.maximum(p[..., 0:h, :], p[..., 1 : h + 1, :]), p[..., 2 : h + 2, :])
    return torch.maximum(torch.maximum(rows[..., 0:w], rows[..., 1 : w + 1]), rows[..., 2 : w + 2])


def _live_first(pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pre-activations (B, C, H, W) as channels-last (B, H, W, C) with each image's channels reordered:
    those positive at some position first (stable order). Returns them, the order (B, C) and the
    count (B,) of such channels."""
    live = (pre > 0).flatten(2).any(2)
    order = torch.argsort((~live).to(torch.int8), dim=1, stable=True)
    last = pre.permute(0, 2, 3, 1)
    return last.gather(3, order[:, None, None, :].expand_as(last)).contiguous(), order, live.sum(1)


def _margins(
    z_b: torch.Tensor,
    dz: torch.Tensor,
    lab: torch.Tensor,
    dh_norm: torch.Tensor,
    w_norms: torch.Tensor,
    dz_rel: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Margins ``d_j = z_t - z_j`` (float64) of logits ``z_b + dz`` and their tolerance: two float32
    computations' rounding (:func:`float_tolerance`) plus that of the product ``dz = Δh @ W.T``, at most
    ``dz_rel·|Δh|·|W_j| <= dz_rel·||Δh||·||W_j||`` per logit."""
    zt = z_b.double() + dz.double()
    zt_t = zt.gather(1, lab[:, None])
    rounding = dz_rel * dh_norm[:, None] * (w_norms[lab][:, None] + w_norms[None, :])
    return zt_t - zt, float_tolerance(zt, zt_t) + rounding


def _tier2_decide(
    d: torch.Tensor,
    tol: torch.Tensor,
    lab: torch.Tensor,
    valid: torch.Tensor,
    k: int,
    pn3: torch.Tensor,
    rho3: torch.Tensor,
    pn5: torch.Tensor,
    rho5: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tier 2: ``|Δd_j| <= ||W_t - W_j||·ρ`` per branch (3x3 and 5x5 columns), plus ``tol``."""
    slack = pn3[lab] * rho3[:, None] + pn5[lab] * rho5[:, None] + tol
    return decide_interval(d - slack, d + slack, lab, valid, k)


def _branch_bounds(
    lin_w: torch.Tensor,
    lin_t: torch.Tensor,
    rem_w: torch.Tensor,
    rem_t: torch.Tensor,
    vm: torch.Tensor,
    b_idx: torch.Tensor,
    lin_err: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A branch's change of every ``d_j`` (float64 estimate, sound half-width) from the int8 tier's
    products ``lin·W_j`` / ``rem·|W_j|`` (P, O) and their true-class terms ``lin·W_t`` / ``rem·|W_t|``
    (P, 1): ``|v_j|·rem <= (|W_t| + |W_j|)·rem`` and the linear error ``<= ||v_j ⊙ [r>0]||·lin_err``."""
    moved = lin_t.double() - lin_w.double()
    slack = ((rem_t + rem_w).double() + vm[b_idx] * lin_err[:, None]) * _SAFETY
    return moved, slack


def _int8_decide(
    d: torch.Tensor,
    tol: torch.Tensor,
    lab: torch.Tensor,
    valid: torch.Tensor,
    k: int,
    moved: torch.Tensor,
    slack: torch.Tensor,
    pn5: torch.Tensor,
    rho5: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The int8 tier's decision: ``d + moved ± (slack + ||W_t - W_j||·ρ5 + tol)`` (``rho5`` 0 once the
    5x5 branch is in ``moved`` / ``slack`` too; one compiled graph serves both stages)."""
    mid = d + moved
    half = slack + pn5[lab] * rho5[:, None] + tol
    return decide_interval(mid - half, mid + half, lab, valid, k)


def _rank_one_interval(
    z: torch.Tensor,
    h_norm: torch.Tensor,
    lab: torch.Tensor,
    pn: torch.Tensor,
    radius: torch.Tensor,
    wn: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A branch's change of every ``d_j`` (float64 estimate, sound half-width) from the rank-one tier:
    ``z = h @ W.T`` (P, O) in float32 (within ``1e-4·||h||·||W_j||``), and ``||Δh - h|| <= radius``,
    so ``|v_j·(Δh - h)| <= ||W_t - W_j||·radius``."""
    moved = z.gather(1, lab[:, None]).double() - z.double()
    rounding = 1e-4 * h_norm.double()[:, None] * (wn[None, :] + wn[lab][:, None])
    return moved, (pn[lab] * radius[:, None] + rounding) * _SAFETY


def _rank1_core(
    p1: torch.Tensor,
    pr: torch.Tensor,
    p3: torch.Tensor,
    p5: torch.Tensor,
    b_idx: torch.Tensor,
    w1: torch.Tensor,
    wpr: torch.Tensor,
    w3b: torch.Tensor,
    w5b: torch.Tensor,
    delta: torch.Tensor,
    d_mp: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Rank-1 updates of the ``mixed5b`` branch inputs for a batch of pairs (all elementwise).

    ``p1`` / ``pr`` (B, out, H, W) and ``p3`` / ``p5`` (B, H, W, out), channels last: baseline
    pre-activations; ``b_idx`` (P,) image of each pair, ``w*`` (P, out) the ablated channel's weight
    column, ``delta`` / ``d_mp`` (P, H, W) the change of the channel and of its max-pool. Returns the
    pooled 1×1 and pool branches (P, out) and the squared norms and largest magnitudes (P,) of the
    changes of the 3×3 / 5×5 bottleneck activations (which are not kept: :class:`BottleneckChange`).
    """
    d = delta[:, None]
    h1 = torch.relu(p1[b_idx] + w1[:, :, None, None] * d).mean((2, 3))
    hp = torch.relu(pr[b_idx] + wpr[:, :, None, None] * d_mp[:, None]).mean((2, 3))
    dq3, dq5 = bottleneck_change(p3, b_idx, w3b, delta), bottleneck_change(p5, b_idx, w5b, delta)
    n3, n5 = dq3.square().sum((1, 2, 3)), dq5.square().sum((1, 2, 3))
    a3, a5 = dq3.abs().amax((1, 2, 3)), dq5.abs().amax((1, 2, 3))
    return h1, hp, n3, n5, a3, a5


@dataclass
class Rank1Update:
    """What :func:`_rank1_core` gives for a batch of pairs, with the imputed values."""

    target: torch.Tensor  # (P, H, W) values imputed into the ablated channel
    h1: torch.Tensor  # (P, 384) pooled 1x1 branch after the ablation
    hp: torch.Tensor  # (P, 128) pooled pool branch
    n3: torch.Tensor  # (P,) squared norm of the 3x3 bottleneck change
    n5: torch.Tensor  # (P,) squared norm of the 5x5 bottleneck change
    a3: torch.Tensor  # (P,) largest magnitude of the 3x3 bottleneck change
    a5: torch.Tensor  # (P,) largest magnitude of the 5x5 bottleneck change
    delta: torch.Tensor  # (P, H, W) change of the ablated channel
    w3b: torch.Tensor  # (P, 192) its 3x3 bottleneck weights, in the image's channel order
    w5b: torch.Tensor  # (P, 48) its 5x5 bottleneck weights, likewise
    q3: BottleneckChange  # the change of the 3x3 bottleneck activations, formed where read
    q5: BottleneckChange  # likewise the 5x5 bottleneck's

    @property
    def dq3(self) -> torch.Tensor:
        """(P, H, W, 192) change of the 3x3 bottleneck activations (channels last, each image's order)."""
        return self.q3.full

    @property
    def dq5(self) -> torch.Tensor:
        """(P, H, W, 48) change of the 5x5 bottleneck activations."""
        return self.q5.full


@dataclass
class _State:
    p1: torch.Tensor  # (B, 384, H, W) pre-activations
    # (B, H, W, 192) / (B, H, W, 48) channels last (the int8 tier's layout: faster to quantise),
    # each image's channels in the order ``order3`` / ``order5``: those positive somewhere first
    p3: torch.Tensor
    p5: torch.Tensor
    mp: torch.Tensor  # (B, 832, H, W) max-pooled input
    pr: torch.Tensor  # (B, 128, H, W)
    h1: torch.Tensor  # (B, 384) pooled 1x1 branch
    hp: torch.Tensor  # (B, 128) pooled pool branch
    # int8 tier only: [r > 0] (uint8) and |r| (bfloat16, rounded down) of the 3x3 / 5x5 outputs'
    # pre-activations r, (B, H*W, out), positions in q3 / q5.positions order (Int8Conv.baseline)
    mask3: torch.Tensor | None = None
    abs3: torch.Tensor | None = None
    mask5: torch.Tensor | None = None
    abs5: torch.Tensor | None = None
    # ||(W_t - W_j) ⊙ [r > 0]|| over the 3x3 / 5x5 columns per (image, j), for the batch's labels
    vm: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    # (B, C) each image's bottleneck channel order (``p3[..., j]`` is channel ``order3[j]``) and (B,) how
    # many lead it with a positive pre-activation somewhere; the others stay zero after an ablation
    # except where it lifts one above zero (:meth:`Int8Conv.change` leaves them out of its products)
    order3: torch.Tensor | None = None
    live3: torch.Tensor | None = None
    order5: torch.Tensor | None = None
    live5: torch.Tensor | None = None
    # sparse tier: the 3x3 / 5x5 outputs' baseline pre-activations (B, out, H, W)
    r3: torch.Tensor | None = None
    r5: torch.Tensor | None = None
    # rank-one tier: the same (B, H*W, out) channels last, and their mean |r| (B, out) (RankOneConv.baseline)
    rl3: tuple[torch.Tensor, torch.Tensor] | None = None
    rl5: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class OpenPairs:
    """Pairs a tier of :meth:`InceptionMixed5aPath.evaluate` works on: rows ``rows`` of the batch's
    :class:`Rank1Update` ``u``, their images ``b_idx`` (one image's pairs consecutive), margins ``d``
    ``= z_t - z_j`` (P, J) float64 and their tolerances ``tol``; with the batch's ``state``, labels
    (per image), ``k`` and valid outputs."""

    state: _State
    labels: torch.Tensor
    u: Rank1Update
    rows: torch.Tensor
    b_idx: torch.Tensor
    d: torch.Tensor
    tol: torch.Tensor
    k: int
    valid: torch.Tensor

    @property
    def lab(self) -> torch.Tensor:
        """(P,) each pair's true output."""
        return self.labels[self.b_idx]

    def subset(self, keep: torch.Tensor) -> OpenPairs:
        """The pairs ``keep`` (indices or a mask) of these."""
        return replace(self, rows=self.rows[keep], b_idx=self.b_idx[keep], d=self.d[keep], tol=self.tol[keep])


def _int8_choice(int8: bool | str, fast: bool | None = None) -> tuple[bool, str]:
    """Whether the int8 tier runs, and a line saying why (for logs and the stage's summary); ``fast``:
    whether int8 products are faster here when already timed (else timed now)."""
    if int8 is False:
        return False, "off (importance.fast_path.options.int8: false)"
    if not int8_matmul_is_exact():
        return False, "off: int8 matrix products are missing or inexact in this PyTorch"
    if int8 == "auto" and not (int8_matmul_is_fast() if fast is None else fast):
        return False, "off: int8 products are not faster than float32 on this CPU (no VNNI): float32 convolutions"
    return True, "on" if int8 == "auto" else "on (importance.fast_path.options.int8: true, even where not faster)"


class InceptionMixed5aPath:
    """Rank-1 + bounds path for lucent's InceptionV1 at ``mixed5a`` (see module doc)."""

    name = "inception_mixed5a_rank1"
    _COLS = {"3": slice(0, 384), "5": slice(384, 512)}  # the 3x3 / 5x5 branches' columns of ``w35``
    sparse_block = 512  # most pairs of one image per :class:`SparseExactConv` call
    pair_batch = 1024  # pairs per evaluate call: the 7×7 convolutions run faster on large batches

    def __init__(
        self,
        module: nn.Module,
        spatial: tuple[int, int] = (7, 7),
        tier2: bool = True,
        compile: bool = False,
        int8: bool | str = "auto",
        sparse: bool | str = "auto",
        lowrank: bool | str = "auto",
        int8_fast: bool | None = None,
        native: bool = True,
    ) -> None:
        """``int8``: the int8 tier (module doc, step 3) on wherever int8 products are exact ("auto",
        the default: and faster than float32 here, :func:`int8_matmul_is_fast`, or ``int8_fast`` where
        the caller has timed that: worker processes get their parent's answer, so all decide alike;
        True: even where slow) or off (False). :attr:`int8_note` says which and why. ``sparse``: the
        sparse exact tier (step 3b), "auto" (the default): where the int8 tier is off (True: after it
        where it runs). ``lowrank``: the rank-one tier (step 2b), "auto" (the
        default): where the int8 tier is off or PyTorch runs on one thread here (True: also before the
        int8 tier with more threads, where it measured no faster). ``native``: the C loops of
        :mod:`.native` where they build (else, or False: PyTorch alone)."""
        if int8 not in (True, False, "auto"):
            raise ValueError(f"int8: expected True, False or 'auto', got {int8!r}")
        if sparse not in (True, False, "auto"):
            raise ValueError(f"sparse: expected True, False or 'auto', got {sparse!r}")
        if lowrank not in (True, False, "auto"):
            raise ValueError(f"lowrank: expected True, False or 'auto', got {lowrank!r}")
        m = module
        self.module = m
        self.tail = ReferenceTail(m)
        self.tier2 = tier2
        self.native = native
        self.hw = spatial[0] * spatial[1]

        def maybe(fn, batch_args=(0,)):
            return compiled_or_eager(fn, batch_args) if compile else fn

        self._core = maybe(_rank1_core, (0, 4))
        self._bottleneck_change = maybe(bottleneck_change, (1,))
        self._margins, self._tier2_decide = maybe(_margins), maybe(_tier2_decide)
        self._branch_bounds, self._int8_decide = maybe(_branch_bounds, (0, 4)), maybe(_int8_decide)
        self._rank_one_interval = maybe(_rank_one_interval)
        self._pooled: tuple[torch.Tensor, torch.Tensor] | None = None
        #: wall seconds spent per part of :meth:`evaluate` (for benchmarks and profiling)
        parts = (
            "rank1_core", "bounds", "lowrank_tier", "int8_tier", "sparse_tier", "exact_convs",
        )  # fmt: skip
        self.seconds = dict.fromkeys(parts, 0.0)
        #: pairs decided by each tier of :meth:`evaluate` (tier 2, the rank-one tier, the int8 tier, the sparse
        #: tier, exact convolutions), and how many pairs the int8, the sparse and the rank-one tier evaluated
        #: the 5x5 branch for
        self.pairs = {
            "tier2": 0, "lowrank": 0, "int8": 0, "sparse": 0, "exact": 0,
            "int8_with_5x5": 0, "sparse_with_5x5": 0, "lowrank_with_5x5": 0,
        }  # fmt: skip

        def w2(conv: nn.Conv2d) -> torch.Tensor:
            return conv.weight.detach().float()[:, :, 0, 0]

        self.w1 = w2(m.mixed5b_1x1_pre_relu_conv)
        self.w3b = w2(m.mixed5b_3x3_bottleneck_pre_relu_conv)
        self.w5b = w2(m.mixed5b_5x5_bottleneck_pre_relu_conv)
        self.wpr = w2(m.mixed5b_pool_reduce_pre_relu_conv)
        self.w1t, self.wprt = self.w1.T.contiguous(), self.wpr.T.contiguous()  # (C, out): one row per channel
        self.w3bt, self.w5bt = self.w3b.T.contiguous(), self.w5b.T.contiguous()
        self.k3 = m.mixed5b_3x3_pre_relu_conv
        self.k5 = m.mixed5b_5x5_pre_relu_conv
        self.fc = m.softmax2_pre_activation_matmul
        self.W = self.fc.weight.detach().float()
        self.cols1p = torch.cat((torch.arange(0, 384), torch.arange(896, 1024)))
        self.cols35 = torch.arange(384, 896)
        # ||W_t - W_j|| restricted to the 3x3 / 5x5 columns, for every (t, j): looked up per pair by label
        all_outputs = torch.arange(self.W.shape[0])
        self.pn3 = pair_norms(self.W[:, 384:768], all_outputs)
        self.pn5 = pair_norms(self.W[:, 768:896], all_outputs)
        # the 1x1 / pool branches' logit change in float32 (512-term sums round by at most 4e-5 relative): bfloat16's
        # looser bound sent more pairs to the float32 convolutions than the cheaper product saved
        self.w1p_product = BoundedProduct(self.W[:, self.cols1p].T, float32_rel=4e-5, bf16=False)
        self.w1p_norms = torch.linalg.vector_norm(self.W[:, self.cols1p].double(), dim=1)  # (O,) ||W_j|| over them
        # operator norms of the 3x3 / 5x5 convolutions on zero-padded H×W maps
        self.l3 = conv_operator_norm(self.k3.weight, spatial, (1, 1)) * _SAFETY
        self.l5 = conv_operator_norm(self.k5.weight, spatial, (2, 2)) * _SAFETY
        sqrt_hw = math.sqrt(self.hw)
        col = lambda w: torch.linalg.vector_norm(w.double(), dim=0)  # noqa: E731
        # tier-1 constants per input channel
        self.a1 = col(self.w1)  # × mean|δ|
        self.ap = col(self.wpr)  # × mean|Δmaxpool|
        self.a3_op = self.l3 * col(self.w3b) / sqrt_hw  # × ||δ||₂
        self.a5_op = self.l5 * col(self.w5b) / sqrt_hw
        k3abs = self.k3.weight.detach().double().abs().sum((2, 3))  # (384, 192)
        k5abs = self.k5.weight.detach().double().abs().sum((2, 3))  # (128, 48)
        self.a3_abs = col(k3abs @ self.w3b.double().abs())  # × mean|δ|
        self.a5_abs = col(k5abs @ self.w5b.double().abs())
        # the int8 tier (module doc, step 3)
        self.int8, self.int8_note = _int8_choice(int8, int8_fast)
        # the sparse exact tier (module doc, step 3b); "auto": where the int8 tier is off (on the few pairs the
        # int8 tier leaves, its per-image set-up costs as much as the float32 convolutions)
        self.sparse = sparse is True or (sparse == "auto" and not self.int8)
        if self.sparse:
            self.s3 = SparseExactConv(self.k3, 1, spatial, compile)
            self.s5 = SparseExactConv(self.k5, 2, spatial, compile)
        if self.int8:
            self.q3 = Int8Conv(self.k3, 1, spatial, compile)
            self.q5 = Int8Conv(self.k5, 2, spatial, compile)
        # the rank-one tier (module doc, step 2b); "auto": where the int8 tier is off, or on one thread (as in the
        # stage's worker processes), where it pays before the int8 tier too (docs/performance.md)
        single_thread = torch.get_num_threads() == 1
        self.lowrank = lowrank is True or (lowrank == "auto" and (not self.int8 or single_thread))
        if self.lowrank:
            self.lr3 = RankOneConv(self.k3, 1, spatial, compile, op=self.l3, native=native)
            self.lr5 = RankOneConv(self.k5, 2, spatial, compile, op=self.l5, native=native)
            # ||W_j|| over the 3x3 / 5x5 columns: the classifier products' rounding, Cauchy-Schwarz
            self.wn3 = torch.linalg.vector_norm(self.W[:, 384:768].double(), dim=1) * _SAFETY
            self.wn5 = torch.linalg.vector_norm(self.W[:, 768:896].double(), dim=1) * _SAFETY
        if self.int8 or self.sparse or self.lowrank:
            self.w35 = self.W[:, 384:896].contiguous()
            # products of the branch changes with the classifier columns: ``lin @ W.T`` within
            # rel·|lin| @ |W|.T (float32: 1e-4 for <= 384-term sums), ``rem @ |W|.T`` from above
            self.lin_products = {b: BoundedProduct(self.w35[:, c].T, float32_rel=1e-4) for b, c in self._COLS.items()}
            self.rem_products = {b: UpperProduct(self.w35[:, c].T.abs()) for b, c in self._COLS.items()}
            # the sparse and rank-one tiers' changes are exact up to float32 rounding: their
            # products stay in float32 (bfloat16's 1.2 % bound would be most of what they leave open);
            # where bfloat16 is off the products above already are
            self.exact_lin_products = self.lin_products
            if any(product.bf16 for product in self.lin_products.values()):
                self.exact_lin_products = {
                    b: BoundedProduct(self.w35[:, c].T, float32_rel=1e-4, bf16=False) for b, c in self._COLS.items()
                }

    def describe(self) -> dict[str, str]:
        """What the stage's summary records: the path, whether its int8 tier runs here (and why), which of its
        optional tiers are on, and whether its C loops are used."""
        from autointerp.importance.fastpaths.inceptionv1.native import kernels

        on = {True: "on", False: "off"}
        return {
            "path": self.name, "int8_tier": self.int8_note, "lowrank_tier": on[self.lowrank],
            "sparse_tier": on[self.sparse], "native_loops": on[bool(self.native and kernels() is not None)],
        }  # fmt: skip

    def _radius(self, sq_norm: torch.Tensor, lipschitz: float) -> torch.Tensor:
        """Tier-2 bound ``ρ >= ||Δh||`` on a branch's pooled change from the squared norm (float32 sums:
        relative rounding ≪ _SAFETY - 1 for these sizes) of its bottleneck change."""
        return sq_norm.double().sqrt() * lipschitz / math.sqrt(self.hw) * _SAFETY**2

    def _pooled_targets(self, ablation: Ablation) -> torch.Tensor:
        """(C, H, W) max-pooled imputed values (image-independent), cached per ablation."""
        assert ablation.values is not None
        # keyed on the tensor itself (held here, so a new tensor can never be mistaken for it)
        if self._pooled is None or self._pooled[0] is not ablation.values:
            self._pooled = (ablation.values, _maxpool3(ablation.values.float()[None])[0])
        return self._pooled[1]

    def _branches_3x3_5x5(
        self, b3: torch.Tensor, b5: torch.Tensor, block: int = 64
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled ``mixed5b`` 3×3 and 5×5 branch outputs of bottleneck activations (channels last), in
        cache-sized blocks.

        The convolutions' own zero padding (faster than padding first); rounding differences from
        the reference are covered by the caller's tolerance and reference-tail fallback.
        """
        q3 = torch.empty(len(b3), self.k3.out_channels)
        q5 = torch.empty(len(b5), self.k5.out_channels)
        for s in range(0, len(b3), block):
            e = s + block
            x3 = b3[s:e].permute(0, 3, 1, 2)  # NCHW views, channels-last memory
            q3[s:e] = F.relu(F.conv2d(x3, self.k3.weight, self.k3.bias, padding=1)).mean((2, 3))
            x5 = b5[s:e].permute(0, 3, 1, 2)
            q5[s:e] = F.relu(F.conv2d(x5, self.k5.weight, self.k5.bias, padding=2)).mean((2, 3))
        return q3, q5

    def _bottleneck_columns(
        self, state: _State, b_idx: torch.Tensor, channels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3×3 / 5×5 bottleneck weight columns (P, out) of the ablated ``channels``, in the channel
        order of ``state.p3`` / ``state.p5`` for each pair's image."""
        assert state.order3 is not None and state.order5 is not None
        w3b = self.w3bt[channels].gather(1, state.order3[b_idx])
        w5b = self.w5bt[channels].gather(1, state.order5[b_idx])
        return w3b, w5b

    def _bottlenecks_after(
        self, state: _State, x: torch.Tensor, b_idx: torch.Tensor, channels: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3×3 / 5×5 bottleneck activations (P, H, W, out), channels last in the network's channel
        order, after imputing ``target`` into ``channels`` of images ``b_idx``: ``relu(p + w_c ⊗ δ)``."""
        assert state.order3 is not None and state.order5 is not None
        delta = (target - x[b_idx, channels])[..., None]
        w3b, w5b = self._bottleneck_columns(state, b_idx, channels)
        out = []
        for pre, w, order in ((state.p3, w3b, state.order3), (state.p5, w5b, state.order5)):
            after = torch.relu(pre[b_idx] + w[:, None, None, :] * delta)
            out.append(torch.empty_like(after).scatter_(3, order[b_idx][:, None, None, :].expand_as(after), after))
        return out[0], out[1]

    def rank1_update(
        self, state: _State, x: torch.Tensor, b_idx: torch.Tensor, channels: torch.Tensor, ablation: Ablation
    ) -> Rank1Update:
        """The ``mixed5b`` branch inputs after ablating ``channels`` of images ``b_idx`` (no convolutions)."""
        a_c = x[b_idx, channels]  # (P, H, W)
        if ablation.values is None:
            target = a_c
            mp_t = _maxpool3(target[:, None])[:, 0]
        else:
            target = ablation.values[channels].to(x)
            mp_t = self._pooled_targets(ablation)[channels]
        w3b, w5b = self._bottleneck_columns(state, b_idx, channels)
        delta = target - a_c
        outputs = self._core(
            state.p1, state.pr, state.p3, state.p5, b_idx, self.w1t[channels], self.wprt[channels],
            w3b, w5b, delta, mp_t - state.mp[b_idx, channels],
        )  # fmt: skip
        q3 = BottleneckChange(state.p3, b_idx, w3b, delta, self._bottleneck_change)
        q5 = BottleneckChange(state.p5, b_idx, w5b, delta, self._bottleneck_change)
        return Rank1Update(target, *outputs, delta, w3b, w5b, q3, q5)

    # -- engine protocol -------------------------------------------------------------------
    def logits_and_grad(
        self, x: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return logits_and_logprob_grad(self.tail, x, labels, valid)

    def final_weight(self) -> torch.Tensor:
        return self.W

    def tier1(self, x: torch.Tensor, ablation: Ablation, features: torch.Tensor) -> torch.Tensor:
        target = ablation.target(x, features)
        delta = (target - x[:, features]).double()
        s1 = delta.abs().mean((2, 3))
        s2 = torch.linalg.vector_norm(delta, dim=(2, 3))
        if ablation.values is not None:
            mp_target = _maxpool3(ablation.values[features][None].to(x))  # (1, F, H, W), image-independent
        else:
            mp_target = _maxpool3(target)
        smp = (mp_target - _maxpool3(x[:, features])).double().abs().mean((2, 3))
        f = features
        rho1 = s1 * self.a1[f]
        rhop = smp * self.ap[f]
        rho3 = torch.minimum(s2 * self.a3_op[f], s1 * self.a3_abs[f])
        rho5 = torch.minimum(s2 * self.a5_op[f], s1 * self.a5_abs[f])
        rho = torch.sqrt(rho1**2 + rhop**2 + rho3**2 + rho5**2)
        return rho * _SAFETY

    def prepare(self, x: torch.Tensor) -> _State:
        with torch.no_grad():
            m = self.module
            p1 = m.mixed5b_1x1_pre_relu_conv(x)
            p3 = m.mixed5b_3x3_bottleneck_pre_relu_conv(x)
            p5 = m.mixed5b_5x5_bottleneck_pre_relu_conv(x)
            mp = _maxpool3(x)
            pr = m.mixed5b_pool_reduce_pre_relu_conv(mp)
            extra = {}
            # the 3x3 / 5x5 outputs' pre-activations r: [r > 0] and |r| as the int8 tier reads them, or r
            for name, conv, pre, pad in (("3", self.k3, p3, 1), ("5", self.k5, p5, 2)):
                if self.int8 or self.sparse or self.lowrank:
                    r = F.conv2d(F.relu(pre), conv.weight, conv.bias, padding=pad)
                if self.lowrank:
                    extra["rl" + name] = getattr(self, "lr" + name).baseline(r)
                if self.int8:
                    extra["mask" + name], extra["abs" + name] = getattr(self, "q" + name).baseline(r)
                if self.sparse:
                    extra["r" + name] = r
            p3, extra["order3"], extra["live3"] = _live_first(p3)
            p5, extra["order5"], extra["live5"] = _live_first(p5)
            return _State(
                p1=p1, p3=p3, p5=p5, mp=mp, pr=pr, h1=F.relu(p1).mean((2, 3)), hp=F.relu(pr).mean((2, 3)), **extra
            )

    def _active_norms(self, state: _State, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, O) ``||(W_t - W_j) ⊙ [r > 0]||`` over the 3x3 and the 5x5 columns, per image and output ``j``."""
        if state.vm is None or state.vm[0] is not labels:
            assert state.mask3 is not None and state.mask5 is not None
            counts = torch.cat((state.mask3.sum(1), state.mask5.sum(1)), 1).double()  # (B, 512) active positions
            # Σ_o (W_t,o - W_j,o)² n_o expanded into three products (float64); like pair_norms, a
            # 1e-12 share of the expanded terms keeps cancellation from making it smaller
            w = self.w35.double()
            w_t = w[labels]
            wt_n = w_t * counts  # (B, 512)
            norms = []
            for cols in self._COLS.values():
                a = counts[:, cols] @ (w[:, cols] ** 2).T  # Σ n W_j²
                c = (wt_n[:, cols] * w_t[:, cols]).sum(1, keepdim=True)  # Σ n W_t²
                sq = a + c - 2.0 * (wt_n[:, cols] @ w[:, cols].T)
                norms.append((sq.clamp_min(0) + 1e-12 * (a + c)).sqrt() * _SAFETY)
            n3, n5 = norms
            state.vm = (labels, n3, n5)
        return state.vm[1], state.vm[2]

    def _branch_interval(self, branch: str, op: OpenPairs) -> tuple[torch.Tensor, torch.Tensor]:
        """Change of every ``d_j = z_t - z_j`` from one branch ("3" or "5") by the int8 tier, for the
        pairs ``op``: estimate and sound half-width, (P, O) float64 each."""
        state, labels, u, rows, b_idx = op.state, op.labels, op.u, op.rows, op.b_idx
        if branch == "3":
            change = self.q3.change(u.dq3, b_idx, state.mask3, state.abs3, rows, u.a3, (state.order3, state.live3))
            vm = self._active_norms(state, labels)[0]
        else:
            change = self.q5.change(u.dq5, b_idx, state.mask5, state.abs5, rows, u.a5, (state.order5, state.live5))
            vm = self._active_norms(state, labels)[1]
        w_t = self.w35[:, self._COLS[branch]][labels[b_idx]]
        products = self._classifier_products(branch, change.lin, w_t, change.rem)
        return self._branch_bounds(*products, vm, b_idx, change.lin_err)

    def _classifier_products(
        self,
        branch: str,
        lin: torch.Tensor,
        w_t: torch.Tensor,
        rem: torch.Tensor | None = None,
        exact: bool = False,
        columns: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``lin @ W_j``, ``lin·W_t``, ``rem' @ |W_j|`` and ``rem'·|W_t|`` (float32) for a branch's pooled
        linear part ``lin`` (P, O), with the true class's weights ``w_t`` (O,) or each pair's (P, O)
        and ``rem`` (P, O): a bound on what ``lin`` misses per output (default none). ``rem'`` adds the
        products' own error along W_j (at most rel·|lin|·|W_j|; float32 true-class sums: 1e-4), so
        the weight (|W_t| + |W_j|)·rem' bounds both. ``exact``: ``lin @ W_j`` in float32 even where
        bfloat16 products are on (for changes known to float32 rounding). ``columns``: only these
        outputs ``j`` (default all)."""
        product = (self.exact_lin_products if exact else self.lin_products)[branch]
        margin = max(product.rel, 1e-4) * lin.abs()
        rem = margin if rem is None else rem + margin
        lin_w, lin_t = product(lin, columns), (w_t * lin).sum(1, keepdim=True)
        return lin_w, lin_t, self.rem_products[branch](rem, columns), (w_t.abs() * rem).sum(1, keepdim=True)

    def _lowrank_tier(self, op: OpenPairs) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """(decided, correct after, the 5x5 branch's interval) for the pairs ``op`` (module doc, step 2b):
        the branches' changes from :class:`~.lowrank.RankOneConv`.

        The 3x3 branch first, with the 5x5 branch's tier-2 radius: that decides about half the pairs
        (most of what both branches decide), and the 5x5
        branch, which costs about as much as the 3x3 one (its 25 taps), runs only for the others. The
        interval (where the int8 or the sparse tier runs next, else None), ``(moved, slack, lo, hi)``
        (U, J) float64 each for the U undecided pairs, in order: the 5x5 branch moves their ``d_j`` by
        ``moved ± slack``, and ``d_j`` after the ablation lies in ``[lo, hi]``."""
        state, u, rows, b_idx, lab = op.state, op.u, op.rows, op.b_idx, op.lab
        assert state.rl3 is not None and state.rl5 is not None
        assert state.order3 is not None and state.order5 is not None

        def branch_change(branch: str, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """z = h @ W.T, ||h|| and the radius for the pairs ``keep`` of ``op``."""
            conv, dq, sq_norm, order, (r, r_abs) = (
                (self.lr3, u.q3, u.n3, state.order3, state.rl3) if branch == "3"
                else (self.lr5, u.q5, u.n5, state.order5, state.rl5)
            )  # fmt: skip
            change = conv.change(dq, u.delta, rows[keep], b_idx[keep], order, r, r_abs, sq_norm)
            h_norm = torch.linalg.vector_norm(change.h, dim=1) * _SAFETY
            return self.exact_lin_products[branch](change.h), h_norm, change.radius

        everything = torch.arange(len(rows))
        z3, hn3, rad3 = branch_change("3", everything)
        moved3, slack3 = self._rank_one_interval(z3, hn3, lab, self.pn3, rad3, self.wn3)
        rho5 = self._radius(u.n5[rows], self.l5)
        decided, correct = self._int8_decide(op.d, op.tol, lab, op.valid, op.k, moved3, slack3, self.pn5, rho5)
        rest = torch.nonzero(~decided)[:, 0]
        self.pairs["lowrank_with_5x5"] += len(rest)
        if not len(rest):
            return decided, correct, None
        z5, hn5, rad5 = branch_change("5", rest)
        moved5, slack5 = self._rank_one_interval(z5, hn5, lab[rest], self.pn5, rad5, self.wn5)
        zero = torch.zeros(len(rest), dtype=torch.float64)
        decided[rest], correct[rest] = self._int8_decide(
            op.d[rest], op.tol[rest], lab[rest], op.valid, op.k, moved3[rest] + moved5, slack3[rest] + slack5,
            self.pn5, zero,
        )  # fmt: skip
        if not (self.int8 or self.sparse):
            return decided, correct, None
        open5 = ~decided[rest]  # the 5x5 interval for the int8 or sparse tier, only for the pairs it will see
        # and the sound interval of every d_j after the ablation, [lo, hi], as the decision above saw it
        kept = rest[open5]
        mid = op.d[kept] + moved3[kept] + moved5[open5]
        half = slack3[kept] + slack5[open5] + op.tol[kept]
        return decided, correct, (moved5[open5], slack5[open5], mid - half, mid + half)

    def _int8_tier(
        self, op: OpenPairs, interval5: tuple[torch.Tensor, ...] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(decided, correct after) for the pairs ``op`` (module doc, step 3).

        The 3×3 branch first, with the 5×5 branch's interval from the rank-one tier (``interval5``:
        ``(moved, slack)`` (P, J)) or else its tier-2 bound (it carries a fifth of the cost); the 5×5
        branch's int8 change only for the pairs that leaves open.
        """
        d, tol, lab, valid, k = op.d, op.tol, op.lab, op.valid, op.k
        moved3, slack3 = self._branch_interval("3", op)
        if interval5 is None:
            rho5 = self._radius(op.u.n5[op.rows], self.l5)
            decided, correct = self._int8_decide(d, tol, lab, valid, k, moved3, slack3, self.pn5, rho5)
        else:
            zero = torch.zeros(len(d), dtype=torch.float64)
            decided, correct = self._int8_decide(
                d, tol, lab, valid, k, moved3 + interval5[0], slack3 + interval5[1], self.pn5, zero
            )
        rest = torch.nonzero(~decided)[:, 0]
        self.pairs["int8_with_5x5"] += len(rest)
        if len(rest):
            moved5, slack5 = self._branch_interval("5", op.subset(rest))
            decided[rest], correct[rest] = self._int8_decide(
                d[rest], tol[rest], lab[rest], valid, k, moved3[rest] + moved5, slack3[rest] + slack5, self.pn5,
                torch.zeros(len(rest), dtype=torch.float64),
            )  # fmt: skip
        return decided, correct

    def _change_products(
        self,
        branch: str,
        lin: torch.Tensor,
        w_t: torch.Tensor,
        extra: torch.Tensor | None = None,
        columns: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The change of every ``d_j`` (P, J) float64 from a branch's pooled change ``lin`` (an exact
        change) and a bound on its error from
        :meth:`_classifier_products` (``extra``: its ``rem``), with float32 products; ``columns``:
        only these ``j``."""
        lin_w, lin_t, rem_w, rem_t = self._classifier_products(branch, lin, w_t, extra, exact=True, columns=columns)
        return lin_t.double() - lin_w.double(), (rem_w.double() + rem_t.double()) * _SAFETY

    def _decide_between(
        self, op: OpenPairs, moved: torch.Tensor, below: torch.Tensor, above: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(decided, correct after) for the pairs ``op`` when every ``d_j`` moves by
        ``[moved - below, moved + above]``."""
        zero = torch.zeros(len(op.d), dtype=torch.float64)
        mid, half = moved + (above - below) / 2, (above + below) / 2
        return self._int8_decide(op.d, op.tol, op.lab, op.valid, op.k, mid, half, self.pn5, zero)

    def _sparse_branch(
        self, op: OpenPairs, branch: str, columns: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One branch's change of every ``d_j`` (P, J) float64 for the pairs ``op`` from
        :class:`SparseExactConv` (``columns``: only these ``j``), a bound on its rounding (P, J), and
        the branch's pooled change (P, O) itself."""
        state, u, rows, b_idx = op.state, op.u, op.rows, op.b_idx
        assert state.r3 is not None and state.r5 is not None and state.order3 is not None
        assert state.order5 is not None
        conv, base, pre, order, w = (
            (self.s3, state.r3, state.p3, state.order3, u.w3b) if branch == "3"
            else (self.s5, state.r5, state.p5, state.order5, u.w5b)
        )  # fmt: skip
        changes, errors = [], []
        for s, e in image_blocks(b_idx, self.sparse_block):
            img, r = int(b_idx[s]), rows[s:e]
            got = conv.change(base[img], pre[img], order[img], w[r], u.delta[r])
            changes.append(got.change)
            errors.append(got.error)
        w_t = self.w35[:, self._COLS[branch]][op.lab]
        change = torch.cat(changes)
        return *self._change_products(branch, change, w_t, torch.cat(errors), columns), change

    def _sparse_tier(
        self, op: OpenPairs, interval5: tuple[torch.Tensor, ...] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(decided, correct after, true-class log-probability after, evaluated) for the pairs ``op``:
        both branches' changes from :class:`SparseExactConv`, exact up to their bounded rounding.

        With the 5x5 branch's interval from the rank-one tier (``interval5``: ``(moved, slack, lo, hi)``
        (P, J), :meth:`_lowrank_tier`; only the outputs its bounds ``[lo, hi]`` on every ``d_j`` after
        the ablation leave open are computed, :func:`class_subset`), the 3x3 branch first: with that
        interval it decides most pairs, and the 5x5 branch, about a third of the tier's cost, runs only
        for the others. Pairs decided so count as bounded (first-order log-probability change); those decided
        with both branches' changes (``evaluated``) as exactly evaluated: their log-probabilities (NaN
        elsewhere) come from the margins after the ablation, ``d_j`` plus their change, the logits up
        to a shift (``z_j - z_t = -d_j``), so the float32 convolutions' up to rounding. Undecided:
        within rounding of the top-k boundary."""
        n = len(op.rows)
        # the outputs the rank-one tier's intervals leave open (all where it did not run): about a tenth
        subset = None if interval5 is None else class_subset(interval5[2], interval5[3], op.lab, op.valid, op.k)
        cols = None if subset is None else subset.columns

        def decide(rows: torch.Tensor | None, moved: torch.Tensor, slack: torch.Tensor) -> tuple[torch.Tensor, ...]:
            """(decided, correct) for the pairs ``rows`` (None: all) when ``d_j`` moves by ``moved ± slack``."""
            if subset is None:
                return self._decide_between(op if rows is None else op.subset(rows), moved, slack, slack)
            pick = slice(None) if rows is None else rows
            mid, half = op.d[pick][:, cols] + moved, slack + op.tol[pick][:, cols]
            return decide_interval(mid - half, mid + half, subset.labels[pick], subset.valid, subset.k[pick])

        moved3, rounding3, change3 = self._sparse_branch(op, "3", cols)
        decided = torch.zeros(n, dtype=torch.bool)
        correct = torch.zeros(n, dtype=torch.bool)
        if interval5 is not None:
            moved5, slack5 = (t if cols is None else t[:, cols] for t in interval5[:2])
            decided, correct = decide(None, moved3 + moved5, rounding3 + slack5)
        rest = torch.nonzero(~decided)[:, 0]
        self.pairs["sparse_with_5x5"] += len(rest)
        evaluated = torch.zeros(n, dtype=torch.bool)
        logprob = torch.full((n,), float("nan"), dtype=torch.float64)
        if len(rest):
            sub = op.subset(rest)
            moved5, rounding5, change5 = self._sparse_branch(sub, "5", cols)
            moved, rounding = moved3[rest] + moved5, rounding3[rest] + rounding5
            done, right = decide(rest, moved, rounding)
            decided[rest], correct[rest], evaluated[rest] = done, right, done
            ex = torch.nonzero(done)[:, 0]
            if len(ex):  # exactly evaluated: the log-probability needs every output's change
                if cols is None:
                    full = moved[ex]
                else:
                    lab = sub.lab[ex]
                    full = (
                        self._change_products("3", change3[rest[ex]], self.w35[:, self._COLS["3"]][lab])[0]
                        + self._change_products("5", change5[ex], self.w35[:, self._COLS["5"]][lab])[0]
                    )
                logprob[rest[ex]] = true_logprob(-(sub.d[ex] + full), sub.lab[ex], sub.valid)
        return decided, correct, logprob, evaluated

    @torch.no_grad()
    def evaluate(
        self,
        state: _State,
        x: torch.Tensor,
        z: torch.Tensor,
        labels: torch.Tensor,
        b_idx: torch.Tensor,
        channels: torch.Tensor,
        ablation: Ablation,
        k: int,
        valid: torch.Tensor,
    ) -> PairResult:
        p = len(b_idx)
        t0 = time.perf_counter()
        u = self.rank1_update(state, x, b_idx, channels, ablation)
        t1 = time.perf_counter()
        self.seconds["rank1_core"] += t1 - t0
        target, h1, hp, n3, n5 = u.target, u.h1, u.hp, u.n3, u.n5
        lab = labels[b_idx]
        undecided = torch.ones(p, dtype=torch.bool)
        evaluated = torch.zeros(p, dtype=torch.bool)  # decided by a tier that computes the exact change
        after = torch.zeros(p, dtype=torch.bool)
        d = tol = None
        if self.tier2 or self.int8 or self.sparse or self.lowrank:
            # logits with the 1x1 / pool branches' exact change; margins d_j = z_t - z_j
            dh1p = torch.cat((h1 - state.h1[b_idx], hp - state.hp[b_idx]), 1)
            dh_norm = torch.linalg.vector_norm(dh1p.double(), dim=1)
            d, tol = self._margins(z[b_idx], self.w1p_product(dh1p), lab, dh_norm, self.w1p_norms, self.w1p_product.rel)
        if self.tier2:
            rho3, rho5 = self._radius(n3, self.l3), self._radius(n5, self.l5)
            # |Δd_j| from the 3x3 and 5x5 branches, bounded per branch (never looser than one joint L2 bound)
            decided, after = self._tier2_decide(d, tol, lab, valid, k, self.pn3, rho3, self.pn5, rho5)
            undecided = ~decided
            self.pairs["tier2"] += int(decided.sum())
        lp_after = torch.full((p,), float("nan"), dtype=torch.float64)
        fallback = 0
        idx = torch.nonzero(undecided)[:, 0]
        t2 = time.perf_counter()
        self.seconds["bounds"] += t2 - t1

        def open_pairs(rows: torch.Tensor) -> OpenPairs:
            """The batch's pairs ``rows``, for a tier."""
            assert d is not None and tol is not None
            return OpenPairs(state, labels, u, rows, b_idx[rows], d[rows], tol[rows], k, valid)

        def settle(decided: torch.Tensor, correct: torch.Tensor, tier: str, part: str) -> torch.Tensor:
            """Record a tier's decisions for the pairs ``idx`` (its count in :attr:`pairs`, its time since
            ``t2`` in :attr:`seconds` under ``part``); the pairs still open."""
            nonlocal t2
            after[idx[decided]] = correct[decided]
            undecided[idx[decided]] = False
            self.pairs[tier] += int(decided.sum())
            now = time.perf_counter()
            self.seconds[part] += now - t2
            t2 = now
            return idx[~decided]

        interval5 = None
        if self.lowrank and len(idx):
            decided, correct, interval5 = self._lowrank_tier(open_pairs(idx))
            idx = settle(decided, correct, "lowrank", "lowrank_tier")
        if self.int8 and len(idx):
            decided, correct = self._int8_tier(open_pairs(idx), interval5)
            idx = settle(decided, correct, "int8", "int8_tier")
            interval5 = None  # the int8 tier's 5x5 change replaced it
        if self.sparse and len(idx):
            decided, correct, logprob, exact = self._sparse_tier(open_pairs(idx), interval5)
            lp_after[idx[exact]] = logprob[exact]
            evaluated[idx[exact]] = True
            idx = settle(decided, correct, "sparse", "sparse_tier")
        if len(idx):
            self.pairs["exact"] += len(idx)
            after3, after5 = self._bottlenecks_after(state, x, b_idx[idx], channels[idx], target[idx])
            q3, q5 = self._branches_3x3_5x5(after3, after5)
            self.seconds["exact_convs"] += time.perf_counter() - t2
            h = torch.cat((h1[idx], q3, q5, hp[idx]), 1)
            za = self.fc(h).float()
            li = lab[idx]
            zt = za.double().gather(1, li[:, None])
            d = zt - za.double()
            tol = float_tolerance(za.double(), zt)
            decided, res = decide_interval(d - tol, d + tol, li, valid, k)
            ambiguous = torch.nonzero(~decided)[:, 0]
            lp = true_logprob(za, li, valid)
            if len(ambiguous):  # on the boundary within rounding: ask the reference tail
                fallback = len(ambiguous)
                amb = idx[ambiguous]
                xa = x[b_idx[amb]].clone()
                xa[torch.arange(len(amb)), channels[amb]] = target[amb]
                zr = reference_tail(self.module, xa).float()
                res[ambiguous] = topk_correct(zr, lab[amb], k, valid)
                lp[ambiguous] = true_logprob(zr, lab[amb], valid)
            after[idx] = res
            lp_after[idx] = lp
        bounded = ~undecided & ~evaluated
        return PairResult(after_correct=after, logprob_after=lp_after, bounded=bounded, fallback=fallback)
