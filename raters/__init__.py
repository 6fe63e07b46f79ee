"""Built-in raters (importing this package registers them with :mod:`autointerp.rating`).

Every rater's ``I`` is in [0, 1], higher = more interpretable (``autointerp.calibration``); raw statistics are
extra columns. See docs/raters.md.

| name | I (scale) | how |
|---|---|---|
| ``human`` | I = (q1·q3 + q4)/2 (human) | survey answers (study CSV / survey app export), averaged over participants |
| ``clip_coherence`` | q4 (null percentile) | mean pairwise cosine of the examples' embeddings, against random sets |
| ``clip_vis_match`` | q1·q3 (null percentile) | similarity of visualisations to examples vs to random images |
| ``clip_label`` | q3 (null percentile) | zero-shot phrases for the visualisations, checked on the examples |
| ``fid`` | I (null percentile of KID) | visualisation vs example embeddings; FD (raw, mean-corrected) as extras |
| ``mis`` | I (null percentile of MIS) | simulated 2-AFC tasks drawn from activation quantiles (Zimmermann et al.) |
| ``auto_I`` | Î = (q̂1·q̂3 + q̂4)/2 (fitted to human) | fitted to human answers out of fold; the plain mean without |
| ``random`` | q1, q3, q4, I (uniform) | seeded uniform noise: the baseline every useful rater must beat |
| ``concept_purity`` | I (answer key) | graded concept purity of the top-k images (needs known concepts) |
"""

from raters import (
    auto_i,
    clip_coherence,
    clip_label,
    clip_vis_match,
    concept_purity,
    fid,
    human,
    mis,
    random_rater,
)

__all__ = [
    "auto_i",
    "clip_coherence",
    "clip_label",
    "clip_vis_match",
    "concept_purity",
    "fid",
    "human",
    "mis",
    "random_rater",
]
