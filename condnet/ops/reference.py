"""The specification: CondNet's conditional-classifier ops in plain PyTorch.

Every fast path (the C++ CPU kernels, the CUDA and Triton kernels) is tested
against the functions in this file. They run on any device and dtype; float16
and bfloat16 inputs compute the softmax in float32, run the products with
float32 accumulation (PyTorch's matmul does) and return the input dtype.

Shapes: x (B, C, H, W), N = H * W pixels, K classes.

    g = Wg x + bg                  guide logits (B, K, H, W)
    p = softmax_k(g)               soft class masks, never returned
    f = (1 / N) p x^T              class features (B, K, C)
    theta[b, k] = A[k] f[b, k] + a[k]   the projection (B, K, C+1)
    w, beta = theta's weights and biases, read as the layout says (layouts.py)
    y = w x + beta                 per-image classifier logits (B, K, H, W)

The 1/N factor divides by the pixel count, not by sum_n p: that is what the
released CondNet model does.

CAC's context-aware classifier (Tian et al., AAAI 2023) on the same steps:

    s = Wg x + bg                  static logits (B, K, H, W); Wg (K, C) or per image (B, K, C)
    P = softmax_k(s)
    mass[b, k] = sum_n P[b, k, n]                              (B, K)
    centres = P x^T / (mass + MASS_EPS)                        (B, K, C)
    v = scale * w / max(|w|, eps),  w = the generator (cac.py) of [centres; W]
    y[b, k, n] = <v[b, k], x[b, :, n]> / max(|x[b, :, n]|, eps)   logits
"""

from __future__ import annotations

import torch

from .cac import DEFAULT_EPS, MASS_EPS, generate
from .layouts import GROUPED_CONV, PER_CLASS, canonical_projection, check_layout, split_theta

__all__ = [
    "class_pool",
    "conditional_classifier",
    "context_aware_classifier",
    "context_pool",
    "cosine_classify",
    "cosine_logits",
    "dynamic_classify",
    "project",
    "project_grouped_conv",
    "project_per_class",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def class_pool(
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guide logits and class-wise masked average pooling.

    Args:
        x: features (B, C, H, W).
        guide_weight: (K, C) weights of the 1x1 guidance classifier.
        guide_bias: optional (K,) bias of the guidance classifier.

    Returns:
        ``(guide_logits, class_feats)`` of shapes (B, K, H, W) and (B, K, C).
    """
    B, C, H, W = x.shape
    N = H * W
    x_flat = x.reshape(B, C, N)
    g = torch.matmul(guide_weight, x_flat)
    if guide_bias is not None:
        g = g + guide_bias[:, None]
    p = torch.softmax(g.float() if g.dtype in _LOW_PRECISION else g, dim=1)
    # p / N is formed in float32 before rounding to x's dtype, so low-precision
    # inputs lose no more than one rounding of p.
    f = torch.matmul((p / N).to(x.dtype), x_flat.transpose(1, 2))
    return g.reshape(B, guide_weight.shape[0], H, W), f


def dynamic_classify(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-image 1x1 classifier: ``y[b] = weight[b] @ x[b] + bias[b]``.

    Args:
        x: features (B, C, H, W).
        weight: per-image classifier weights (B, K, C).
        bias: optional per-image biases (B, K).

    Returns:
        logits (B, K, H, W).
    """
    B, C, H, W = x.shape
    y = torch.matmul(weight, x.reshape(B, C, H * W))
    if bias is not None:
        y = y + bias[:, :, None]
    return y.reshape(B, weight.shape[1], H, W)


def project(
    class_feats: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The projection: ``theta[b, k] = proj_weight[k] @ class_feats[b, k] + proj_bias[k]``.

    Args:
        class_feats: (B, K, C).
        proj_weight: (K, C + 1, C), in class_feats' dtype, or float32 for
            float16/bfloat16 class features (float32 master weights).
        proj_bias: optional (K, C + 1), in proj_weight's dtype.

    Returns:
        theta (B, K, C + 1) in class_feats' dtype. With float32 weights and
        16-bit features the product runs in float32 and is rounded once.
    """
    feats = class_feats.to(proj_weight.dtype)
    theta = torch.einsum("kjc,bkc->bkj", proj_weight, feats)
    if proj_bias is not None:
        theta = theta + proj_bias
    return theta.to(class_feats.dtype)


def project_per_class(
    class_feats: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean projection: one (C+1) x C matrix per class.

    ``theta[b, k] = proj_weight[k] @ class_feats[b, k] + proj_bias[k]``; the
    first C entries of theta are the class's weights, the last its bias.

    Args:
        class_feats: (B, K, C).
        proj_weight: (K, C + 1, C).
        proj_bias: optional (K, C + 1).

    Returns:
        ``(weight, bias)`` of shapes (B, K, C) and (B, K).
    """
    return split_theta(project(class_feats, proj_weight, proj_bias), PER_CLASS)


def project_grouped_conv(
    class_feats: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The released model's projection: a grouped 1x1 conv, groups=K.

    The class features are read class-major as C*K input channels; the conv
    has C*K + K outputs, C + 1 per group. Its first C*K outputs, read
    class-major, are the weights and its last K outputs the biases. Group
    boundaries therefore do not line up with classes (all K biases come from
    the last group); released checkpoints were trained with exactly this.

    Computed as the per-class product (group k of the conv is a (C+1) x C
    matrix applied to class k's features) read back with the conv's split,
    which is far faster than a grouped conv with C*K channels.

    Args:
        class_feats: (B, K, C).
        proj_weight: (C*K + K, C, 1, 1), the conv weight as stored in
            released checkpoints; (C*K + K, C) is accepted too.
        proj_bias: optional (C*K + K,).

    Returns:
        ``(weight, bias)`` of shapes (B, K, C) and (B, K).
    """
    A, a = canonical_projection(proj_weight, proj_bias, GROUPED_CONV, class_feats.shape[1])
    return split_theta(project(class_feats, A, a), GROUPED_CONV)


def conditional_classifier(
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_bias: torch.Tensor | None,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None = None,
    layout: str = GROUPED_CONV,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole conditional classifier: ``(logits, guide_logits)``.

    class_pool, then the projection in ``layout`` (proj_weight and proj_bias
    as that layout stores them: (C*K + K, C[, 1, 1]) and (C*K + K,) for
    ``"grouped_conv"``, (K, C + 1, C) and (K, C + 1) for ``"per_class"``), then
    dynamic_classify.
    """
    layout = check_layout(layout)
    guide_logits, class_feats = class_pool(x, guide_weight, guide_bias)
    project_fn = project_grouped_conv if layout == GROUPED_CONV else project_per_class
    weight, bias = project_fn(class_feats, proj_weight, proj_bias)
    return dynamic_classify(x, weight, bias), guide_logits


def _per_image(weight: torch.Tensor, batch: int) -> torch.Tensor:
    return weight.unsqueeze(0).expand(batch, -1, -1) if weight.dim() == 2 else weight


def context_pool(
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CAC's pooling: static logits, class centres and class masses.

    Args:
        x: features (B, C, H, W).
        guide_weight: (K, C), or (B, K, C) for one guide per image (the
            static classifier with a Dropout2d mask folded in).
        guide_bias: optional (K,).

    Returns:
        ``(guide_logits, centres, mass)``: (B, K, H, W), (B, K, C) and (B, K),
        in x's dtype; ``centres = P x^T / (mass + MASS_EPS)``.
    """
    B, C, H, W = x.shape
    x_flat = x.reshape(B, C, H * W)
    g = torch.matmul(_per_image(guide_weight, B), x_flat)
    if guide_bias is not None:
        g = g + guide_bias[:, None]
    p = torch.softmax(g.float() if g.dtype in _LOW_PRECISION else g, dim=1)
    mass = p.sum(-1)
    sums = torch.matmul(p.to(x.dtype), x_flat.transpose(1, 2))
    centres = sums / (mass.to(sums.dtype) + MASS_EPS)[..., None]
    return g.reshape(B, -1, H, W), centres.to(x.dtype), mass.to(x.dtype)


def cosine_classify(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: float = 1.0,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """Cosine logits: ``scale * <weight / max(|weight|, eps), x / max(|x|, eps)>``.

    Args:
        x: features (B, C, H, W).
        weight: classifiers (K, C), or (B, K, C) one set per image.
        scale: the logits' scale (15 in CAC).
        eps: the norms' lower clamp; 0 divides exactly (NaN for a zero vector).

    Returns:
        logits (B, K, H, W) in x's dtype; the norms are summed in float32
        for 16-bit inputs.
    """
    compute = torch.float32 if x.dtype in _LOW_PRECISION else x.dtype
    weight = _per_image(weight, x.shape[0]).to(compute)
    v = weight * (scale / weight.norm(dim=-1, keepdim=True).clamp_min(eps))
    return cosine_logits(x, v, eps)


def cosine_logits(x: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """``<v[b, k], x[b, :, n]> / max(|x[b, :, n]|, eps)``: the cosine logits for
    classifiers v (B, K, C) already scaled and normalised (the form the
    kernels' ``cosine_classify`` takes)."""
    B, C, H, W = x.shape
    compute = torch.float32 if x.dtype in _LOW_PRECISION else x.dtype
    x_flat = x.reshape(B, C, H * W).to(compute)
    y = torch.matmul(v.to(compute), x_flat) / x_flat.norm(dim=1, keepdim=True).clamp_min(eps)
    return y.reshape(B, -1, H, W).to(x.dtype)


def context_aware_classifier(
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_bias: torch.Tensor | None,
    class_weight: torch.Tensor,
    proj_in_weight: torch.Tensor,
    proj_out_weight: torch.Tensor,
    proj_out_bias: torch.Tensor | None = None,
    scale: float = 15.0,
    eps: float = DEFAULT_EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CAC's whole classifier: ``(logits, guide_logits)``.

    :func:`context_pool` with ``guide_weight``; the generator (:mod:`.cac`)
    on the centres and ``class_weight`` (K, C), the static classifier;
    :func:`cosine_classify` with the generated per-image classifiers.
    ``proj_in_weight`` (Hd, 2C), ``proj_out_weight`` (C, Hd) and
    ``proj_out_bias`` (C,) are the generator's two linear layers.
    """
    guide_logits, centres, _ = context_pool(x, guide_weight, guide_bias)
    v = generate(centres, class_weight, proj_in_weight, proj_out_weight, proj_out_bias, scale, eps)
    return cosine_logits(x, v, eps), guide_logits
