"""Research diagnostics of a training run: measurements that explain what a model
learns, logged by the trainer and changing nothing it computes.

:class:`GuidanceGradients` splits the gradient reaching CondNet's guidance conv into
the part from the Dice guidance loss and the part from the pooled-feature path
(``grad_guide_dice``, ``grad_guide_pool``, ``cos_guide`` in the training log).
"""

from .guidance_gradients import GuidanceGradients, guidance_parameters

__all__ = ["GuidanceGradients", "guidance_parameters"]
