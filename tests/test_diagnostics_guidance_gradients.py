"""GuidanceGradients: the guidance conv's gradient split into its Dice and pooling parts,
and the trainer's logging of it."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from condnet.diagnostics import GuidanceGradients, guidance_parameters
from condnet.models.losses import CondNetLoss
from condnet.nn import ConditionalClassifier


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.classifier = ConditionalClassifier(12, 5, dropout=0)

    def forward(self, img):
        return self.classifier(torch.relu(self.stem(img)), return_guide=True)


def _batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    label = torch.randint(0, 5, (2, 8, 8), generator=gen)
    return img, label


def _grads(loss, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)])


def test_the_two_parts_are_the_gradients_of_the_two_losses():
    torch.manual_seed(0)
    net = _Net().double()
    params = guidance_parameters(net)
    assert len(params) == 2  # the guidance conv's weight and bias
    criterion = CondNetLoss(guidance_weight=0.2)
    img, label = _batch()
    logits, guide = net(img)
    losses = criterion(label, logits, guide)
    # The truth, computed independently: each loss term on its own.
    dice_truth = _grads(losses["loss_guidance"], params)
    pool_truth = _grads(losses["loss_seg"], params)

    split = GuidanceGradients(net)
    split.add_dice(losses["loss_guidance"])
    losses["loss"].backward()
    measured = split.measure()
    assert measured["grad_guide_dice"] == pytest.approx(float(dice_truth.norm()), rel=1e-10)
    assert measured["grad_guide_pool"] == pytest.approx(float(pool_truth.norm()), rel=1e-10)
    cos = float(dice_truth @ pool_truth / (dice_truth.norm() * pool_truth.norm()))
    assert measured["cos_guide"] == pytest.approx(cos, abs=1e-10)
    assert split.measure() == {}  # forgotten once measured


def test_accumulation_and_scale():
    torch.manual_seed(0)
    net = _Net().double()
    params = guidance_parameters(net)
    criterion = CondNetLoss(guidance_weight=1.0)
    split = GuidanceGradients(net)
    scale, dice_total = 8.0, 0
    for seed in (0, 1):  # two micro-batches of an accumulated step, loss scaled by 8 / 2
        img, label = _batch(seed)
        losses = criterion(label, *net(img))
        dice_total = dice_total + _grads(losses["loss_guidance"], params) / 2
        split.add_dice(losses["loss_guidance"] * scale / 2)
        (losses["loss"] * scale / 2).backward()
    measured = split.measure(scale)
    assert measured["grad_guide_dice"] == pytest.approx(float(dice_total.norm()), rel=1e-10)
    total = torch.cat([p.grad.reshape(-1) for p in params]) / scale
    assert measured["grad_guide_pool"] == pytest.approx(
        float((total - dice_total).norm()), rel=1e-10
    )


def test_a_plain_model_has_nothing_to_measure():
    split = GuidanceGradients(nn.Conv2d(3, 4, 1))
    assert not split.enabled and split.measure() == {}


def test_the_trainer_logs_the_split_and_the_validation_guidance(tmp_path):
    from condnet.demo import write_scenes
    from condnet.engine.config import load_config
    from condnet.engine.trainer import Trainer

    from .test_tools_demo import REPO, TINY

    data = tmp_path / "scenes"
    write_scenes(data, num_train=4, num_val=2, size=48)
    config = tmp_path / "tiny.py"
    base = REPO / "condnet" / "configs" / "demo" / "condnet_r18-d8_scenes.py"
    config.write_text(TINY.format(base=str(base)))
    cfg = load_config(
        config,
        [
            f"data.root={str(data)!r}",
            "runner.max_iters=2",
            "runner.log_interval=1",
            "evaluation.interval=2",
        ],
    )
    trainer = Trainer(cfg, tmp_path / "work", validate=True)
    trainer.run()
    lines = trainer.log.json_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    train = [r for r in records if r.get("mode") == "train"]
    assert len(train) == 2
    for record in train:
        assert record["grad_guide_dice"] > 0 and record["grad_guide_pool"] > 0
        assert -1 <= record["cos_guide"] <= 1
    (val,) = [r for r in records if r.get("mode") == "val"]
    assert 0 <= val["acc_guidance"] <= 1
