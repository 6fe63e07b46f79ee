"""Feature visualisation: a batched Lucid-style renderer, quality checks and feature cards.

* :mod:`~autointerp.vis.param` — FFT image parametrisation with colour decorrelation (lucent's maths);
* :mod:`~autointerp.vis.transforms` — lucent's standard robustness transforms, drawn per image;
* :mod:`~autointerp.vis.objectives` — channel objective and Lucid's Gram-matrix diversity term;
* :mod:`~autointerp.vis.render` — optimises features × images in one batch, retries non-finite runs;
* :mod:`~autointerp.vis.kernels` — frozen weights, channels-last and faster equivalent kernels;
* :mod:`~autointerp.vis.quality` — activation of a visualisation measured like the activation cache;
* :mod:`~autointerp.vis.receptive_field` — crop dataset examples around the maximal position;
* :mod:`~autointerp.vis.compose` — feature cards and contact sheets (PIL).

Heavy imports (torch) live in the submodules; importing this package is cheap.
"""
