"""The demo: CondNet against its plain twin on generated scenes, on the CPU.

Not part of the library a model imports: everything here exists for
``condnet-demo`` and ``condnet-make-scenes``.

- :mod:`~condnet.demo.scenes`: the scene generator (:func:`write_scenes`), whose
  files :class:`condnet.data.SceneDataset` reads;
- :mod:`~condnet.demo.colour_check`: what colour alone tells a global and a
  per-image classifier on a written set (:func:`colour_cue_check`);
- :mod:`~condnet.demo.stages`: the two recipes' trainings;
- :mod:`~condnet.demo.stats`: the scores, tables and the paired comparison over seeds;
- :mod:`~condnet.demo.figures`: the predictions and guidance figures;
- :mod:`~condnet.demo.run`: the whole demo (``DemoSettings``, ``run_demo``).

The package itself exports the scene generator and the colour check only, so that
``condnet-make-scenes`` does not load the training stack; import the others from
their modules.
"""

from .colour_check import colour_cue_check
from .scenes import generate_scene, scene_rng, write_scenes

__all__ = ["colour_cue_check", "generate_scene", "scene_rng", "write_scenes"]
