"""The whole CAC classifier as the released head computes it, in plain PyTorch.

This is what the kernel benchmark's eager and compile providers run for the
``cac`` op (compile: this function under torch.compile), and what the fused
``condnet.ops.context_aware_classifier`` is judged against. It follows the
order of operations of the released head (repository tianzhuotao/CAC,
``sep_aspp_head_cac.py``: the static logits of ``forward``, then
``post_refine_proto_v2`` and ``get_pred``) and imports nothing from condnet,
so that the baseline is what a user of the released code runs, not condnet's
own reference:

1. static logits: a 1x1 conv of x (``conv_seg``; the Dropout2d before it is
   the identity at inference and is left out, as the fused op's rows run
   without a channel mask);
2. softmax over the K classes, kept as a (B, K, N) map;
3. class centres: that map times a permuted view of x, divided by the map's
   sum over the pixels plus 1e-12;
4. the generator input: the centres concatenated with the static classifier's
   weight repeated over the batch, (B, K, 2C); the generator
   Linear(2C, C/2, no bias), ReLU, Linear(C/2, C);
5. cosine logits: x divided by its ``torch.norm`` over the channels (a
   normalised copy of x), the generated classifiers divided by theirs, one
   batched product, times 15.

The released ``post_refine_proto_v2`` starts with ``x.clone()``; the copy is
left out, because it changes no value and would only make the baseline slower.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCALE = 15.0  # the released head's fixed logit scale
MASS_EPS = 1e-12  # added to each class's softmax mass, as released


def classifier(
    x: torch.Tensor,
    seg_weight: torch.Tensor,
    seg_bias: torch.Tensor | None,
    proj_in_weight: torch.Tensor,
    proj_out_weight: torch.Tensor,
    proj_out_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, static_logits)``, both (B, K, H, W).

    Args:
        x: features (B, C, H, W).
        seg_weight: (K, C) or (K, C, 1, 1), ``conv_seg.weight``.
        seg_bias: optional (K,), ``conv_seg.bias``.
        proj_in_weight: (C/2, 2C), ``proj[0].weight``.
        proj_out_weight: (C, C/2), ``proj[2].weight``.
        proj_out_bias: optional (C,), ``proj[2].bias``.
    """
    B, C, H, W = x.shape
    K, N = seg_weight.shape[0], H * W
    static = F.conv2d(x, seg_weight.reshape(K, C, 1, 1), seg_bias)
    prob = F.softmax(static.reshape(B, K, N), dim=1)
    pixels = x.reshape(B, C, N).permute(0, 2, 1)  # (B, N, C)
    centres = (prob @ pixels) / (prob.sum(-1).unsqueeze(-1) + MASS_EPS)  # (B, K, C)
    proto = seg_weight.reshape(K, C).unsqueeze(0).repeat(B, 1, 1)
    hidden = F.relu(F.linear(torch.cat([centres, proto], -1), proj_in_weight))
    generated = F.linear(hidden, proj_out_weight, proj_out_bias)  # (B, K, C)
    unit_x = x / torch.norm(x, 2, 1, True)
    unit_w = generated / torch.norm(generated, 2, -1, True)
    logits = unit_w @ unit_x.contiguous().reshape(B, C, N)
    return logits.reshape(B, K, H, W) * SCALE, static
