"""CAC's per-image classifier generator, forward and backward, in plain PyTorch.

The generator is the small part of the context-aware classifier (B*K rows of
2C numbers): every backend runs it with ATen's matmul, in the generator's own
weights' dtype (float32 master weights under autocast), and rounds its output
once to the features' dtype.

    z[b, k] = [centres[b, k]; W[k]]                      (B, K, 2C)
    a = z Wi^T,  h = relu(a),  w = h Wo^T + bo           (B, K, C)
    v = scale * w / max(|w|, eps)                        "classifier" (B, K, C)

Both constants of the epsilon policy live here:

- ``MASS_EPS`` = 1e-12 is added to each class's mass before the centres are
  divided by it (the released value, in every mode): a class that no pixel
  takes gets a centre near 0 instead of a division by zero.
- ``DEFAULT_EPS`` = 1e-12 clamps the norms of the features and of the
  generated classifiers from below, as ``F.normalize`` does: a zero vector
  gives zero logits, not NaN. ``eps=0`` is the released code's exact division.
"""

from __future__ import annotations

import torch

MASS_EPS = 1e-12
DEFAULT_EPS = 1e-12

__all__ = ["DEFAULT_EPS", "MASS_EPS", "generate", "generate_backward"]


def _generator_input(centres: torch.Tensor, class_weight: torch.Tensor, dtype: torch.dtype):
    B = centres.shape[0]
    proto = class_weight.to(dtype).unsqueeze(0).expand(B, -1, -1)
    return torch.cat([centres.to(dtype), proto], dim=-1)


def generate(
    centres: torch.Tensor,
    class_weight: torch.Tensor,
    proj_in_weight: torch.Tensor,
    proj_out_weight: torch.Tensor,
    proj_out_bias: torch.Tensor | None,
    scale: float,
    eps: float,
) -> torch.Tensor:
    """The scaled, normalised per-image classifiers ``v`` (B, K, C), in centres' dtype."""
    z = _generator_input(centres, class_weight, proj_in_weight.dtype)
    w = torch.relu(z @ proj_in_weight.t()) @ proj_out_weight.t()
    if proj_out_bias is not None:
        w = w + proj_out_bias
    norm = w.norm(dim=-1, keepdim=True).clamp_min(eps)
    return (w * (scale / norm)).to(centres.dtype)


def generate_backward(
    grad_classifier: torch.Tensor,
    centres: torch.Tensor,
    class_weight: torch.Tensor,
    proj_in_weight: torch.Tensor,
    proj_out_weight: torch.Tensor,
    proj_out_bias: torch.Tensor | None,
    scale: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients of :func:`generate`'s inputs from that of its output ``v``.

    Recomputes the generator's forward (cheaper than saving it) and returns
    ``(d centres, d class_weight, d proj_in_weight, d proj_out_weight,
    d proj_out_bias)``; each in its input's dtype, d proj_out_bias None when
    there is no bias.
    """
    dtype = proj_in_weight.dtype
    C = centres.shape[-1]
    z = _generator_input(centres, class_weight, dtype)
    a = z @ proj_in_weight.t()
    h = torch.relu(a)
    w = h @ proj_out_weight.t()
    if proj_out_bias is not None:
        w = w + proj_out_bias
    length = w.norm(dim=-1, keepdim=True)
    norm = length.clamp_min(eps)
    dv = grad_classifier.to(dtype)
    # v = scale * w / norm; where the clamp is inactive norm = |w| depends on w.
    dw = dv * (scale / norm)
    v_dot_dv = (w * dv).sum(-1, keepdim=True)
    active = length >= eps
    dw = dw - torch.where(active, w * (scale * v_dot_dv / (norm * norm * length)), 0.0)
    rows = dw.reshape(-1, dw.shape[-1])
    d_out_weight = rows.t() @ h.reshape(-1, h.shape[-1])
    d_out_bias = rows.sum(0) if proj_out_bias is not None else None
    da = (dw @ proj_out_weight) * (a > 0)
    d_in_weight = da.reshape(-1, da.shape[-1]).t() @ z.reshape(-1, z.shape[-1])
    dz = da @ proj_in_weight
    d_centres = dz[..., :C].to(centres.dtype)
    d_class_weight = dz[..., C:].sum(0).to(class_weight.dtype)
    return d_centres, d_class_weight, d_in_weight, d_out_weight, d_out_bias
