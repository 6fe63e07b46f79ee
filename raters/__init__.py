"""Built-in raters (importing this package registers them with :mod:`autointerp.rating`).

| name | scores | how |
|---|---|---|
| ``human`` | q1, q3, q4, q5, q6, I | survey answers (study CSV / survey app export), averaged over participants |
| ``clip_coherence`` | q4 | mean pairwise cosine of the examples' embeddings, calibrated against random sets |
| ``clip_vis_match`` | q1·q3 | similarity of visualisations to examples vs to random images, calibrated |
| ``clip_label`` | q3 | zero-shot phrases for the visualisations, and how well they describe the examples |
| ``fid`` | Fréchet distance, KID | visualisation vs example embedding distributions (shrunk covariances) |
| ``mis`` | MIS | Machine Interpretability Score: simulated 2-AFC tasks (Zimmermann et al.) |
| ``auto_I`` | Î = (q̂1·q̂3 + q̂4)/2 | combines components; calibrated to human answers with cross-validation |
| ``random`` | q1, q3, q4, I | seeded uniform noise: the baseline every useful rater must beat |
| ``concept_purity`` | I | reference answer key: graded concept purity of the top-k images (needs known concepts) |
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

__all__ = ["auto_i", "clip_coherence", "clip_label", "clip_vis_match", "concept_purity", "fid", "human", "mis",
           "random_rater"]
