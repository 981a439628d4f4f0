"""The optimizer's parameter groups and the iteration lr schedule, checked
against values computed here in closed form."""

import math

import pytest
import torch
from torch import nn

from condnet.engine.config import ConfigError, LrConfig, OptimizerConfig, RunnerConfig
from condnet.engine.lr_schedule import IterLRScheduler
from condnet.engine.optim import build_optimizer


class Named(nn.Module):
    def __init__(self, **children):
        super().__init__()
        for name, child in children.items():
            setattr(self, name, child)


def tiny_segmentor():
    """Segmentor-like names: a backbone with a LayerNorm and a position
    embedding, heads with BatchNorm / GroupNorm, and one frozen layer."""
    model = Named(
        backbone=Named(
            conv=nn.Conv2d(3, 4, 3),  # weight, bias
            norm=nn.LayerNorm(4),  # weight, bias
            frozen=nn.Conv2d(4, 4, 1),  # requires_grad False: skipped
        ),
        decode_head=Named(
            conv=nn.Conv2d(4, 4, 1, bias=False),  # weight
            bn=nn.BatchNorm2d(4),  # weight, bias
            conv_seg=nn.Conv2d(4, 3, 1),  # weight, bias
        ),
        auxiliary_head=Named(gn=nn.GroupNorm(2, 4), conv_seg=nn.Conv2d(4, 3, 1)),
    )
    model.backbone.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4))
    model.backbone.frozen.requires_grad_(False)
    return model


def groups_by_mults(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        (g["lr_mult"], g["decay_mult"]): (sorted(names[id(p)] for p in g["params"]), g)
        for g in optimizer.param_groups
    }


def test_default_is_one_sgd_group():
    model = tiny_segmentor()
    opt = build_optimizer(model, OptimizerConfig(lr=0.01, weight_decay=5e-4))
    assert isinstance(opt, torch.optim.SGD)
    assert len(opt.param_groups) == 1
    (group,) = opt.param_groups
    assert len(group["params"]) == 14  # 16 parameters, 2 frozen
    assert (group["lr"], group["weight_decay"], group["momentum"]) == (0.01, 5e-4, 0.9)
    assert (group["lr_mult"], group["decay_mult"]) == (1.0, 1.0)


def test_head_lr_and_no_decay_groups():
    model = tiny_segmentor()
    cfg = dict(
        type="AdamW",
        lr=1e-3,
        betas=(0.8, 0.99),
        weight_decay=0.01,
        head_lr_mult=10.0,
        no_decay_norm=True,
        no_decay_keys=("absolute_pos_embed",),
        grad_clip=1.0,
    )
    opt = build_optimizer(model, OptimizerConfig(**cfg))
    assert isinstance(opt, torch.optim.AdamW)
    groups = groups_by_mults(opt, model)
    assert set(groups) == {(1.0, 1.0), (1.0, 0.0), (10.0, 1.0), (10.0, 0.0)}
    assert groups[(1.0, 1.0)][0] == ["backbone.conv.bias", "backbone.conv.weight"]
    assert groups[(1.0, 0.0)][0] == [
        "backbone.absolute_pos_embed",
        "backbone.norm.bias",
        "backbone.norm.weight",
    ]
    assert groups[(10.0, 1.0)][0] == [
        "auxiliary_head.conv_seg.bias",  # plain biases keep their decay
        "auxiliary_head.conv_seg.weight",
        "decode_head.conv.weight",
        "decode_head.conv_seg.bias",
        "decode_head.conv_seg.weight",
    ]
    assert groups[(10.0, 0.0)][0] == [
        "auxiliary_head.gn.bias",
        "auxiliary_head.gn.weight",
        "decode_head.bn.bias",
        "decode_head.bn.weight",
    ]
    for (lr_mult, decay_mult), (_, group) in groups.items():
        assert group["lr"] == pytest.approx(1e-3 * lr_mult)
        assert group["weight_decay"] == pytest.approx(0.01 * decay_mult)
        assert group["betas"] == (0.8, 0.99)


def test_optimizer_config_errors():
    # Checked once, when the section is made (the config loader makes it).
    model = tiny_segmentor()
    with pytest.raises(ConfigError, match="optimizer.type must be one of"):
        OptimizerConfig(type="Adam")
    with pytest.raises(
        ConfigError,
        match=r"unknown config key 'optimizer.lr_mult'.*did you mean 'head_lr_mult'.*valid keys",
    ):
        OptimizerConfig.from_dict({"lr_mult": 2})
    with pytest.raises(ConfigError, match="optimizer.lr must be a number > 0"):
        OptimizerConfig(lr=0)
    with pytest.raises(ConfigError, match="optimizer.weight_decay must be a number >= 0"):
        OptimizerConfig(weight_decay=-1)
    with pytest.raises(ConfigError, match=r"optimizer.betas\[1\] must be a number in \[0, 1\)"):
        OptimizerConfig(betas=(0.9, 1.0))
    with pytest.raises(ConfigError, match="no_decay_keys"):
        OptimizerConfig(no_decay_keys="norm")
    with pytest.raises(ConfigError, match="grad_clip"):
        OptimizerConfig(grad_clip=0)
    with pytest.raises(TypeError, match="OptimizerConfig"):
        build_optimizer(model, {"type": "SGD"})
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model.requires_grad_(False), OptimizerConfig())


# ---- the schedule ----


def optimizer_with(*lrs):
    groups = [{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def poly(base, it, max_iters, power, min_lr):
    return (base - min_lr) * (1 - it / max_iters) ** power + min_lr


def test_poly_without_warmup():
    opt = optimizer_with(0.01, 0.1)
    sched = IterLRScheduler(opt, LrConfig(power=0.9, min_lr=1e-4), max_iters=100)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.01, 0.1]
    for it in (0, 1, 37, 99, 100, 150):
        expected = [poly(b, min(it, 100), 100, 0.9, 1e-4) for b in (0.01, 0.1)]
        assert sched.step(it) == pytest.approx(expected, rel=1e-12)
        assert sched.get_lr() == pytest.approx(expected, rel=1e-12)
    assert sched.get_lr() == pytest.approx([1e-4, 1e-4])


def test_linear_warmup_over_poly_and_constant():
    for policy in ("poly", "constant"):
        opt = optimizer_with(0.02, 0.2)
        warmup = dict(warmup="linear", warmup_iters=10, warmup_ratio=0.1)
        config = LrConfig(policy=policy, power=1.0, min_lr=0.0, **warmup)
        sched = IterLRScheduler(opt, config, 50)
        for it in range(0, 20):
            regular = [b * (1 - it / 50) if policy == "poly" else b for b in (0.02, 0.2)]
            factor = 0.1 + 0.9 * it / 10 if it < 10 else 1.0
            assert sched.step(it) == pytest.approx([r * factor for r in regular], rel=1e-12)
        assert sched.lr_at(0)[0] == pytest.approx(0.002)  # warmup_ratio * base


def test_constant_keeps_the_base_lr():
    opt = optimizer_with(0.05)
    sched = IterLRScheduler(opt, LrConfig(policy="constant", min_lr=0.5), 10)
    assert [sched.step(it)[0] for it in (0, 5, 9)] == [0.05, 0.05, 0.05]


def test_state_dict_round_trip_and_initial_lr_kept():
    opt = optimizer_with(0.01)
    sched = IterLRScheduler(opt, LrConfig(warmup="linear", warmup_iters=5), 100)
    sched.step(42)
    state = sched.state_dict()
    assert state == {"last_iteration": 42}
    # Resuming: the optimizer state (decayed lr, initial_lr) is loaded first.
    opt2 = optimizer_with(0.01)
    opt2.load_state_dict(opt.state_dict())
    sched2 = IterLRScheduler(opt2, LrConfig(warmup="linear", warmup_iters=5), 100)
    assert sched2.base_lrs == [0.01]
    opt2.param_groups[0]["lr"] = 123.0
    sched2.load_state_dict(state)
    assert sched2.last_iteration == 42
    assert sched2.get_lr() == pytest.approx([poly(0.01, 42, 100, 0.9, 1e-4)])
    assert math.isclose(sched2.step(43)[0], sched.step(43)[0])


@pytest.mark.parametrize(
    "section, kwargs, match",
    [
        (RunnerConfig, dict(max_iters=0), "runner.max_iters"),
        (LrConfig, dict(power=0), "lr_config.power must be a number > 0"),
        (LrConfig, dict(policy="step"), "policy"),
        (LrConfig, dict(warmup="exp"), "lr_config.warmup must be one of"),
        (LrConfig, dict(warmup_iters=-1), "warmup_iters"),
        (LrConfig, dict(warmup_ratio=0), "warmup_ratio"),
        (LrConfig, dict(warmup_ratio=1.5), "warmup_ratio"),
        (LrConfig, dict(min_lr=-1), "min_lr"),
    ],
)
def test_schedule_errors(section, kwargs, match):
    # The schedule's settings are checked by their sections; the scheduler takes them.
    with pytest.raises(ConfigError, match=match):
        section(**kwargs)


def test_step_rejects_negative_iterations():
    with pytest.raises(ValueError, match="iteration"):
        IterLRScheduler(optimizer_with(0.1), LrConfig(), 10).step(-1)
