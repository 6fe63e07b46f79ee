"""An independent reference for the InceptionV1 ``mixed5a`` fast path (issue 27, item 8).

The reference used elsewhere (:func:`~fastpaths.inceptionv1.synthetic.hooked_forward_logits`) computes the logits
with :func:`~fastpaths.inceptionv1.path.reference_tail`, which the fast path shares, so a bug there would
hide in both. Here nothing of :mod:`autointerp.importance` computes the reference: lucent's own
``InceptionV1.forward`` runs on real ImageNet images (64 px upscaled to 224) with a forward hook on its
``mixed5a`` module that replaces channel ``c`` by its mean (over the images, per channel or per channel and
position), and a hook on the classifier (``softmax2_pre_activation_matmul``) reads the logits lucent's softmax
gets. Top-k correctness is computed here too: over the 1000 real outputs 1..1000 (0 and 1001–1007 are dummies),
correct when fewer than k other real outputs have a strictly larger logit. Each image's label is planted at rank
k−1 or k of its own logits, so it sits at the top-k boundary and ablations flip it; a random-init model (torch's
default initialisation, seeded; per-channel means) and a rescaled one with trained-like logit spreads (per-channel
and per-position means) are checked, and the fast path runs with its int8 tier and with its float tiers (sparse,
low-rank). (The random-init model with per-position means flips no pair of these: left out.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autointerp.importance.ablation import Ablation
from autointerp.importance.engine import evaluate_segment
from autointerp.importance.fastpaths.inceptionv1.path import InceptionMixed5aPath, supports_inception_mixed5a
from autointerp.importance.fastpaths.inceptionv1.synthetic import rescaled_inceptionv1
from autointerp.models.inceptionv1 import load_inceptionv1

K = 10
N_OUTPUTS = 1008
REAL = torch.zeros(N_OUTPUTS, dtype=torch.bool)
REAL[1:1001] = True  # the study's 1000 classes; 0 and 1001-1007 are dummy outputs
IMAGE_ROWS = [3, 250, 511, 777]  # rows of imagenet_sample_64.npz
FEATURES = sorted(np.random.default_rng(0).choice(832, 40, replace=False).tolist())
TIERS = {  # fast-path settings: the int8 tier first, or float32 tiers only
    "int8": dict(compile=False, int8=True, sparse=False, lowrank=False),
    "float_tiers": dict(compile=False, int8=False, sparse=True, lowrank=True),
}


def real_images(shared: Path) -> torch.Tensor:
    """(4, 3, 224, 224) in [0, 1]: real 64-px ImageNet images, bilinearly upscaled as in the study."""
    with np.load(shared / "data/imagenet_sample_64.npz") as data:
        rows = data["data"][IMAGE_ROWS]
    x = torch.as_tensor(rows.reshape(-1, 3, 64, 64)).float() / 255.0
    return F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)


def correct_top_k(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) bool: fewer than K real outputs other than the label have a strictly larger logit."""
    rows = []
    for z, t in zip(logits.tolist(), labels.tolist(), strict=True):
        above = sum(1 for j in range(1, 1001) if j != t and z[j] > z[t])
        rows.append(above < K and 1 <= t <= 1000)
    return torch.tensor(rows)


class LucentAblation:
    """lucent's InceptionV1 forward with hooks: ``mixed5a`` recorded and (optionally) one channel replaced by
    its mean; the classifier's output (pre-softmax logits) recorded."""

    def __init__(self, model: torch.nn.Module, images01: torch.Tensor) -> None:
        self.model = model
        self.inputs = images01 * 255.0 - 117.0  # lucid's InceptionV1 input range
        self.channel: int | None = None
        self.means: torch.Tensor | None = None  # (C,) or (C, H, W)
        self.seen: dict[str, torch.Tensor] = {}

    def _mixed5a(self, _m: torch.nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor | None:
        self.seen["mixed5a"] = out.detach().clone()
        if self.channel is None:
            return None
        out = out.clone()
        out[:, self.channel] = self.means[self.channel]  # a scalar, or a (H, W) map per position
        return out

    def _logits(self, _m: torch.nn.Module, _i: object, out: torch.Tensor) -> None:
        self.seen["logits"] = out.detach().clone()

    @torch.no_grad()
    def run(self, channel: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(live mixed5a, logits, lucent's softmax output) of one forward with ``channel`` ablated (or none)."""
        self.channel = channel
        handles = [
            self.model.mixed5a.register_forward_hook(self._mixed5a),
            self.model.softmax2_pre_activation_matmul.register_forward_hook(self._logits),
        ]
        try:
            probs = self.model(self.inputs)
        finally:
            for h in handles:
                h.remove()
        return self.seen["mixed5a"], self.seen["logits"], probs


def reference_counts(
    lucent: LucentAblation, labels: torch.Tensor, base: torch.Tensor, features: list[int]
) -> tuple[list[int], list[int]]:
    """(correct→wrong, wrong→correct) per feature, one hooked lucent forward per feature."""
    c2w, w2c = [], []
    for c in features:
        _, z, _ = lucent.run(c)
        after = correct_top_k(z, labels)
        c2w.append(int((base & ~after).sum()))
        w2c.append(int((~base & after).sum()))
    return c2w, w2c


def make_model(kind: str, images01: torch.Tensor) -> torch.nn.Module:
    if kind == "random_init":
        torch.manual_seed(0)
        # lucent's own LRN: with Lucid's (stronger) LRN this random network's planted pairs never flip, and the
        # fast path starts at mixed5a, after both LRN layers, so the choice does not touch what is compared
        return load_inceptionv1(pretrained=False, lrn="lucent")
    return rescaled_inceptionv1(seed=0, example=images01 * 255.0 - 117.0)


@pytest.mark.parametrize(
    ("kind", "scope"),
    [
        ("rescaled", "channel"),
        ("rescaled", "position"),
        # nearly every pair of the random-init model needs the exact tier: ~20 s on 2 cores
        pytest.param("random_init", "channel", marks=pytest.mark.slow),
    ],
)
def test_fast_path_equals_lucent_forward_reference(shared_dir: Path, kind: str, scope: str) -> None:
    torch.set_num_threads(2)
    images = real_images(shared_dir)
    model = make_model(kind, images)
    lucent = LucentAblation(model, images)
    acts, z0, probs = lucent.run()
    assert acts.shape == (len(images), 832, 7, 7) and z0.shape == (len(images), N_OUTPUTS)
    torch.testing.assert_close(torch.softmax(z0, 1), probs)  # the hook reads the logits lucent's softmax gets
    lucent.means = acts.mean((0, 2, 3)) if scope == "channel" else acts.mean(0)
    # plant each label at rank K-1 (just correct) or K (just wrong) among the real outputs
    order = z0.masked_fill(~REAL, float("-inf")).argsort(1, descending=True)
    ranks = torch.tensor([K - 1, K, K - 1, K])
    labels = order[torch.arange(len(images)), ranks]
    base = correct_top_k(z0, labels)
    assert base.tolist() == [True, False, True, False]
    ref_c2w, ref_w2c = reference_counts(lucent, labels, base, FEATURES)
    assert sum(ref_c2w) + sum(ref_w2c) > 0  # some pairs flip: the comparison is not vacuous
    # the same live activations (the baseline forward's mixed5a) through the fast path
    channel_mean = acts.mean((0, 2, 3)).numpy()
    ablation = Ablation.from_means(channel_mean, acts.mean(0).numpy(), scope, (832, 7, 7))
    assert supports_inception_mixed5a(model, "mixed5a", (7, 7))
    for name, settings in TIERS.items():
        path = InceptionMixed5aPath(model, **settings)
        tally, _ = evaluate_segment(path, acts.numpy(), labels.numpy(), FEATURES, ablation, K, REAL, batch_size=4)
        got = (tally.correct_to_wrong.tolist(), tally.wrong_to_correct.tolist())
        diff = {f: (got[0][i], got[1][i], ref_c2w[i], ref_w2c[i]) for i, f in enumerate(FEATURES)
                if (got[0][i], got[1][i]) != (ref_c2w[i], ref_w2c[i])}  # fmt: skip
        assert not diff, f"{kind}/{scope}/{name}: feature -> (fast c->w, w->c, reference c->w, w->c): {diff}"
