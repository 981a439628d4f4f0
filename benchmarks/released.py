"""The whole conditional classifier as the released CondNet model computes it.

This is the "released" provider of the kernel benchmark: the same math as
condnet.ops (class_pool, project_grouped_conv, dynamic_classify) written the way
the released code writes it, with convolutions and a materialised softmax map:

1. guide logits: a 1x1 conv of x;
2. softmax over the K classes, kept as a (B, K, N) map;
3. class features: that map times a permuted, contiguous copy of x (B, N, C),
   divided by N;
4. projection: a grouped 1x1 conv (groups=K) on the class features read as
   (B, C*K, 1, 1); its first C*K outputs, class-major, are the per-image
   classifier weights (B*K, C, 1, 1), its last K outputs the biases;
5. logits: one grouped conv over x viewed as (1, B*C, H, W) with groups=B.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classifier(
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_bias: torch.Tensor | None,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guide logits (B, K, H, W) and classifier logits (B, K, H, W).

    Args:
        x: features (B, C, H, W).
        guide_weight: (K, C) or (K, C, 1, 1), the guidance 1x1 conv.
        guide_bias: optional (K,).
        proj_weight: (C*K + K, C, 1, 1) or (C*K + K, C), the grouped projection conv.
        proj_bias: optional (C*K + K,).
    """
    B, C, H, W = x.shape
    K, N = guide_weight.shape[0], H * W
    guide = F.conv2d(x, guide_weight.reshape(K, C, 1, 1), guide_bias)
    logits = guide.reshape(B, K, N)
    if x.dtype in (torch.float16, torch.bfloat16):  # as autocast would: softmax in float32
        prob = torch.softmax(logits.float(), dim=1).to(x.dtype)
    else:
        prob = torch.softmax(logits, dim=1)
    pixels = x.reshape(B, C, N).permute(0, 2, 1).contiguous()  # (B, N, C)
    class_feats = torch.matmul(prob, pixels) / N  # (B, K, C)
    theta = F.conv2d(
        class_feats.reshape(B, K * C, 1, 1),
        proj_weight.reshape(K * C + K, C, 1, 1),
        proj_bias,
        groups=K,
    ).reshape(B, K * C + K)
    weight = theta[:, : K * C].reshape(B * K, C, 1, 1)
    bias = theta[:, K * C :].reshape(B * K)
    out = F.conv2d(x.reshape(1, B * C, H, W), weight, bias, groups=B)
    return guide, out.reshape(B, K, H, W)
