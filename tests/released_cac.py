"""The released CAC head's classifier and losses, transcribed: the test oracle of
:class:`condnet.nn.ContextAwareClassifier` and :func:`condnet.nn.cac_losses`.

Transcribed from the math of the released code (repository tianzhuotao/CAC,
``mmseg/models/decode_heads/sep_aspp_head_cac.py``: ``forward``'s last line,
``post_refine_proto_v2``, ``get_pred``, ``get_adaptive_perspective``,
``get_distill_loss``, ``forward_train``, ``forward_test``; the main loss from
``decode_head.py``'s ``losses`` and mmseg 0.x's ``cross_entropy``), keeping its
order of operations, its norms (``torch.norm`` divisions in ``get_pred``,
``F.normalize`` in the oracle) and each 1e-12 where it stands. It is written
in plain torch on whatever device its inputs are on, and imports nothing from
condnet, so it cannot share a mistake with the code it checks.

The head's features come in as ``feat``: everything above ``conv_seg`` (the
ASPP, the bottlenecks) is the host model's, not the classifier's. The
Dropout2d of ``conv_seg(dropout(feat))`` is an explicit ``channel_mask``
(B, C) of multipliers (0 or 1/(1-p)), so a test can feed the same draw to
both implementations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = 255  # the released head hard-codes it
SCALE = 15.0


def _projection(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(channels * 2, channels // 2, bias=False),
        nn.ReLU(),
        nn.Linear(channels // 2, channels),
    )


class ReleasedCACClassifier(nn.Module):
    """The classifier part of the released ``DepthwiseSeparableASPPHeadCAC``,
    with its parameter names (``conv_seg``, ``proj``, ``apd_proj``)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.proj = _projection(channels)
        self.apd_proj = _projection(channels)
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)

    def static_logits(self, feat, channel_mask=None):
        """``conv_seg(dropout(feat))``: the last line of the released ``forward``."""
        dropped = feat if channel_mask is None else feat * channel_mask[:, :, None, None]
        return self.conv_seg(dropped)

    def get_pred(self, x, proto):
        """Cosine logits x 15; ``proto`` (K, C) or (B, K, C); exact divisions by the norms."""
        b, c, h, w = x.shape
        x = x / torch.norm(x, 2, 1, True)
        if proto.dim() == 3:
            proto = proto / torch.norm(proto, 2, -1, True)
        else:
            proto = (proto / torch.norm(proto, 2, 1, True)).unsqueeze(0)
        pred = proto @ x.reshape(b, c, h * w)
        return pred.reshape(b, proto.shape[-2], h, w) * SCALE

    def post_refine_proto_v2(self, x, pred, proto):
        """Soft class centres from softmax(pred), the generator ``proj`` on
        [centre; conv_seg row], cosine logits against x."""
        b, c, h, w = x.shape
        prob = F.softmax(pred.reshape(b, proto.shape[0], h * w), 1)
        centres = (prob @ x.reshape(b, c, h * w).permute(0, 2, 1)) / (
            prob.sum(-1).unsqueeze(-1) + 1e-12
        )
        generator_input = torch.cat([centres, proto.unsqueeze(0).repeat(b, 1, 1)], -1)
        return self.get_pred(x, self.proj(generator_input))

    def get_adaptive_perspective(self, x, y, new_proto, proto):
        """The oracle: each labelled class's mean feature over the whole batch
        replaces its row of ``new_proto`` (conv_seg's weight, detached);
        ``apd_proj`` on [that; proto]; F.normalize cosine x 15."""
        b, c, h, w = x.shape
        y = F.interpolate(y.float(), size=(h, w), mode="nearest")
        classes = [value for value in y.unique() if value != IGNORE]
        for value in classes:
            mask = (y == value).to(x.dtype)
            mean = (x * mask).sum(0).sum(-1).sum(-1) / (mask.sum(0).sum(-1).sum(-1) + 1e-12)
            onehot = torch.zeros(new_proto.shape[0], 1, dtype=x.dtype, device=x.device)
            onehot[value.long()] = 1
            new_proto = new_proto * (1 - onehot) + mean.unsqueeze(0) * onehot
        generated = self.apd_proj(torch.cat([new_proto, proto], -1))
        generated = F.normalize(generated[:, :, None, None], 2, 1)
        return F.conv2d(F.normalize(x, 2, 1), weight=generated) * SCALE

    def forward_test(self, feat):
        static = self.static_logits(feat)
        return self.post_refine_proto_v2(feat, static, self.conv_seg.weight.squeeze())

    def forward_train(self, feat, y, channel_mask=None, align_corners=False):
        """The four loss terms (not summed) and the three logits.

        ``y`` is the (B, 1, H, W) int64 label; ``align_corners`` is the head's
        (False in every released config), used by the main loss only.
        """
        static = self.static_logits(feat, channel_mask)
        weight = self.conv_seg.weight.squeeze()
        logits = self.post_refine_proto_v2(feat, static, weight)
        oracle = self.get_adaptive_perspective(feat, y, weight.detach(), weight)
        distill = get_distill_loss(logits, oracle.detach(), y.squeeze(1))
        criterion = nn.CrossEntropyLoss(ignore_index=IGNORE)
        size = y.shape[-2:]
        static_up = F.interpolate(static, size=size, mode="bilinear", align_corners=True)
        oracle_up = F.interpolate(oracle, size=size, mode="bilinear", align_corners=True)
        losses = {
            "main": decode_head_loss(logits, y, align_corners),
            "static": criterion(static_up, y.squeeze(1).long()),
            "oracle": criterion(oracle_up, y.squeeze(1).long()),
            "distill": distill,
        }
        return losses, {"logits": logits, "static_logits": static, "oracle_logits": oracle}


def decode_head_loss(seg_logit, seg_label, align_corners=False, ignore_index=IGNORE):
    """mmseg 0.x ``BaseDecodeHead.losses`` with the default CrossEntropyLoss
    (weight 1): bilinear resize to the label, per-pixel cross-entropy with
    ``reduction='none'`` (ignored pixels give 0), then the mean over ALL pixels."""
    seg_logit = F.interpolate(
        seg_logit, size=seg_label.shape[2:], mode="bilinear", align_corners=align_corners
    )
    per_pixel = F.cross_entropy(
        seg_logit.float() if seg_logit.dtype in (torch.float16, torch.bfloat16) else seg_logit,
        seg_label.squeeze(1),
        reduction="none",
        ignore_index=ignore_index,
    )
    return per_pixel.mean()


def get_distill_loss(pred, soft, target, smoothness=0.5):
    """Distillation at feature resolution: target ``0.5 * softmax(soft) + 0.5 *
    onehot``; per-pixel cross-entropy against ``log_softmax(pred)``, weighted by
    the entropy of softmax(soft); averaged within each labelled class, then over
    the classes (the released ``eps`` smoothing is off: eps=0)."""
    b, c, h, w = soft.shape
    target = F.interpolate(target.unsqueeze(1).float(), size=pred.shape[-2:], mode="nearest")
    target = target.squeeze(1).long()
    flat = target.reshape(-1, 1)
    ignored = (flat == IGNORE).long()
    flat = flat * (1 - ignored)
    onehot = torch.zeros(b * h * w, c, dtype=soft.dtype, device=soft.device).scatter_(1, flat, 1)
    onehot = onehot.reshape(b, h, w, c).permute(0, 3, 1, 2)
    soft_prob = F.softmax(soft, 1)
    smoothed = smoothness * soft_prob + (1 - smoothness) * onehot
    loss = (-1 * F.log_softmax(pred, dim=1) * smoothed).sum(1)
    entropy = -1 * (soft_prob * torch.log(soft_prob + 1e-12)).sum(1)
    entropy = entropy * (target != IGNORE).to(entropy.dtype)
    terms = []
    for value in [v for v in target.unique() if v != IGNORE]:
        class_entropy = entropy * (target == value).to(entropy.dtype)
        terms.append((loss * class_entropy).sum() / (class_entropy.sum() + 1e-12))
    if not terms:
        return torch.zeros(1, dtype=pred.dtype, device=pred.device).mean()
    return sum(terms) / (len(terms) + 1e-12)
