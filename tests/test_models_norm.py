"""BatchNorm vs SyncBatchNorm, chosen by whether a process group is running."""

import pytest
import torch
import torch.distributed as dist
from torch import nn

from condnet.models.norm import convert_norm, norm2d, sync_bn_available


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))


@pytest.fixture
def process_group(tmp_path):
    """A single-process gloo group, torn down after the test."""
    assert not dist.is_initialized()
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path}/pg")
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.fixture
def gpu_process_group(process_group, monkeypatch):
    """The group as a multi-GPU NCCL run sees it: 2 processes, backend nccl."""
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: "nccl")


def test_without_process_group_plain_batchnorm():
    assert not sync_bn_available()
    layer = norm2d(8)
    assert type(layer) is nn.BatchNorm2d and layer.num_features == 8
    net = _net()
    assert convert_norm(net) is net
    assert [type(m) for m in net if "Norm" in type(m).__name__] == [nn.BatchNorm2d] * 2
    net.train()(torch.randn(2, 3, 6, 6))  # trains on CPU


def test_gloo_group_keeps_plain_batchnorm(process_group):
    # SyncBatchNorm cannot train on CPU tensors, and one process has nothing
    # to sync with: a gloo run must still train.
    assert not sync_bn_available()
    assert type(norm2d(8)) is nn.BatchNorm2d
    net = _net()
    assert convert_norm(net) is net
    net.train()(torch.randn(2, 3, 6, 6))


def test_with_gpu_process_group_syncbn(gpu_process_group):
    assert sync_bn_available()
    layer = norm2d(8)
    assert type(layer) is nn.SyncBatchNorm and layer.num_features == 8
    net = _net()
    with torch.no_grad():
        net[1].running_mean.fill_(0.5)
        net[1].weight.fill_(2.0)
    x = torch.randn(2, 3, 6, 6)
    expected = net.eval()(x)
    converted = convert_norm(net)
    norms = [m for m in converted if "Norm" in type(m).__name__]
    assert [type(m) for m in norms] == [nn.SyncBatchNorm] * 2
    # Weights and statistics carried over; eval mode needs no GPU.
    assert torch.equal(norms[0].running_mean, torch.full((4,), 0.5))
    torch.testing.assert_close(converted.eval()(x), expected)


def test_back_to_plain_after_teardown(tmp_path):
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path}/pg")
    dist.destroy_process_group()
    assert not sync_bn_available()
    assert type(norm2d(3)) is nn.BatchNorm2d


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "8"])
def test_norm2d_rejects_bad_num_features(bad):
    with pytest.raises(ValueError, match="num_features must be a positive int"):
        norm2d(bad)


def test_convert_norm_rejects_non_module():
    with pytest.raises(TypeError, match="module must be an nn.Module; got list"):
        convert_norm([nn.BatchNorm2d(2)])
