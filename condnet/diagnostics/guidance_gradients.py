"""Which loss trains CondNet's guidance conv: the two gradients that reach it.

The guidance conv (``ConditionalClassifier.guidance_project``) gets gradient
along two paths:

- **dice**: the guidance loss (Dice on the guide logits, ``loss_guidance``),
  the path that teaches the guide the labels;
- **pool**: the segmentation losses, through the soft class masks that pool
  the per-image class features (and so through the generated classifier).

Nothing in the loss keeps the second from overwhelming the first or from
pointing away from the labels, and when it does, the guide stops meaning
"where class k is" and the conditional classifier pools noise. The trainer
measures both, every log interval, as ``grad_guide_dice`` and
``grad_guide_pool`` (L2 norms over the guidance conv's weight and bias, of
every conditional classifier together), plus ``cos_guide`` (their cosine: < 0
means the pooling path undoes what the Dice loss teaches).

How: on a logged iteration, ``torch.autograd.grad`` of the (scaled) guidance
loss with respect to the guidance parameters, with the graph kept, gives the
dice part; after the step's ``backward``, the parameters' ``.grad`` is the
sum of both, so pool = total - dice. It costs one extra backward through the
classifier on logged iterations only, and changes no gradient. Under DDP,
the dice part is averaged over the processes as the ``.grad`` is.
"""

from __future__ import annotations

import torch
import torch.distributed
from torch import nn

from condnet.nn import ConditionalClassifier

__all__ = ["GuidanceGradients", "guidance_parameters"]


def guidance_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The guidance convs' weights and biases of every conditional classifier in
    ``model`` (empty for a plain model)."""
    params: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, ConditionalClassifier):
            params.extend(p for p in module.guidance_project.parameters() if p.requires_grad)
    return params


class GuidanceGradients:
    """Splits the guidance conv's gradient into its dice and pool parts (see the module).

    Per logged iteration: :meth:`add_dice` after each micro-batch's forward
    (with the loss as it is backpropagated: divided for accumulation, scaled
    by a grad scaler), then :meth:`measure` after the last ``backward``,
    before gradients are clipped or unscaled.
    """

    def __init__(self, model: nn.Module, world_size: int = 1) -> None:
        self.params = guidance_parameters(model)
        self.world_size = world_size
        self._dice: list[torch.Tensor] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.params)

    def add_dice(self, loss_guidance: torch.Tensor) -> None:
        """Adds the gradient of ``loss_guidance`` (as backpropagated) to the dice part."""
        found = torch.autograd.grad(
            loss_guidance, self.params, retain_graph=True, allow_unused=True
        )
        pairs = zip(self.params, found, strict=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in pairs]
        if self._dice is None:
            self._dice = grads
        else:
            self._dice = [a + b for a, b in zip(self._dice, grads, strict=True)]

    def measure(self, scale: float = 1.0) -> dict[str, float]:
        """``{"grad_guide_dice", "grad_guide_pool", "cos_guide"}`` of this iteration
        (``scale``: the grad scaler's factor, divided out), then forgets it."""
        if self._dice is None:
            return {}
        dice = torch.cat([g.detach().reshape(-1).double() for g in self._dice])
        self._dice = None
        if self.world_size > 1:  # DDP averages .grad over the processes
            torch.distributed.all_reduce(dice)
            dice /= self.world_size
        total = torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p))
                .detach()
                .reshape(-1)
                .double()
                for p in self.params
            ]
        )
        pool = total - dice
        dice_norm, pool_norm = float(dice.norm()) / scale, float(pool.norm()) / scale
        cos = float(dice @ pool / (dice.norm() * pool.norm()).clamp(min=1e-30))
        return {"grad_guide_dice": dice_norm, "grad_guide_pool": pool_norm, "cos_guide": cos}
