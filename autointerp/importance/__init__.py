"""Mean-ablation importance: the generic engine and, in :mod:`.fastpaths`, model-specific fast paths.

The generic engine works for any model and layer: :mod:`.engine` (a bound pass, then exact work per chunk
of features) with the paths of :mod:`.paths` (any tail) and :mod:`.affine` (affine tails), the
:mod:`.attribution` estimate and the :mod:`.naive` reference, tallied by :mod:`.ablation`, run in units by
:mod:`.workers`. Fast paths (:mod:`.fastpaths`) plug into the engine through the
:class:`~.engine.AblationPath` protocol and a small registry; nothing here imports them. Importing this
package imports nothing else and changes no process settings.
"""
