"""A run's checkpoints: iter_N/latest/best handling, --load-from weights, and the
RNG state round trip (the file reading and writing: test_checkpoint_files.py)."""

import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from condnet.checkpoint_files import load_checkpoint, save_atomic
from condnet.engine.checkpoint import CheckpointManager
from condnet.engine.config import CheckpointConfig, ConfigError
from condnet.engine.rng_state import capture_rng_state, restore_rng_state
from condnet.engine.weights import load_weights


def state(value):
    return {"meta": {"iteration": int(value)}, "state_dict": {"w": torch.full((64,), value)}}


def value_of(path):
    return load_checkpoint(path)["state_dict"]["w"][0].item()


def names(directory):
    return sorted(p.name for p in directory.iterdir())


def truncate_half(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


# ---- CheckpointManager ----


def test_latest_and_best_share_the_content(tmp_path):
    manager = CheckpointManager(tmp_path / "run")
    assert manager.latest() is None
    assert manager.save(100, state(1.0), best=True) == tmp_path / "run" / "iter_100.pth"
    manager.save(200, state(2.0))
    run = tmp_path / "run"
    assert names(run) == ["best.pth", "iter_100.pth", "iter_200.pth", "latest.pth"]
    assert os.path.samefile(run / "latest.pth", run / "iter_200.pth")
    assert os.path.samefile(run / "best.pth", run / "iter_100.pth")
    assert value_of(run / "best.pth") == 1.0
    assert manager.latest() == run / "latest.pth"
    assert value_of(manager.latest()) == 2.0


def test_hard_link_failure_falls_back_to_a_copy(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    manager = CheckpointManager(tmp_path)
    manager.save(1, state(5.0), best=True)
    for name in ("latest.pth", "best.pth"):
        assert not os.path.samefile(tmp_path / name, tmp_path / "iter_1.pth")
        assert (tmp_path / name).read_bytes() == (tmp_path / "iter_1.pth").read_bytes()
    assert names(tmp_path) == ["best.pth", "iter_1.pth", "latest.pth"]


def test_pruning_keeps_the_newest_and_best_survives(tmp_path):
    manager = CheckpointManager(tmp_path, max_keep=2)
    manager.save(1, state(1.0), best=True)
    for it in (2, 3, 4):
        manager.save(it, state(float(it)))
    assert [n for n, _ in manager.iter_files()] == [3, 4]
    assert value_of(tmp_path / "best.pth") == 1.0  # its iter_1.pth is gone, the link is not
    # A resume from an earlier iteration: the file just written is kept.
    CheckpointManager(tmp_path, max_keep=1).save(2, state(2.5))
    assert [n for n, _ in manager.iter_files()] == [2]
    assert value_of(tmp_path / "latest.pth") == 2.5


def test_latest_skips_truncated_files(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, state(1.0))
    manager.save(2, state(2.0))
    truncate_half(tmp_path / "iter_2.pth")  # latest.pth is the same file
    with pytest.warns(RuntimeWarning, match="truncated or not a checkpoint"):
        found = manager.latest()
    assert found == tmp_path / "iter_1.pth"
    assert value_of(found) == 1.0
    truncate_half(found)
    with pytest.warns(RuntimeWarning):
        assert manager.latest() is None


def test_latest_without_latest_pth_takes_the_highest_iteration(tmp_path):
    manager = CheckpointManager(tmp_path)
    for it in (9, 10, 2):
        save_atomic(state(float(it)), tmp_path / f"iter_{it}.pth")
    (tmp_path / "iter_11.pth.tmp.123").write_bytes(b"partial")
    assert manager.latest() == tmp_path / "iter_10.pth"
    assert manager.remove_temporaries() == [tmp_path / "iter_11.pth.tmp.123"]
    assert names(tmp_path) == ["iter_10.pth", "iter_2.pth", "iter_9.pth"]


def test_manager_rejects_bad_arguments(tmp_path):
    # max_keep is checkpoint.max_keep, checked once by its config section.
    with pytest.raises(ConfigError, match="checkpoint.max_keep"):
        CheckpointConfig(max_keep=0)
    with pytest.raises(ValueError, match="iteration"):
        CheckpointManager(tmp_path).save(-1, state(1.0))


# ---- load_weights ----


class Named(nn.Module):
    def __init__(self, **children):
        super().__init__()
        for name, child in children.items():
            setattr(self, name, child)


def toy_segmentor(seed=0):
    """The key layout of a Segmentor, with a ResNet-like stem."""
    torch.manual_seed(seed)
    return Named(
        backbone=Named(conv1=nn.Sequential(nn.Conv2d(3, 4, 3, bias=False)), bn1=nn.BatchNorm2d(4)),
        decode_head=Named(bn=nn.BatchNorm2d(4), classifier=Named(conv_seg=nn.Conv2d(4, 3, 1))),
    )


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_load_weights_formats(tmp_path):
    source = toy_segmentor(0)
    sd = source.state_dict()
    ours = tmp_path / "ours.pth"
    CheckpointManager(tmp_path).save(0, {"meta": {}, "state_dict": sd})
    os.replace(tmp_path / "iter_0.pth", ours)
    ddp = {f"module.{k}": v for k, v in sd.items()}
    mmseg_names = {
        "backbone.conv1.0.": "backbone.stem.0.",
        "backbone.bn1.": "backbone.stem.7.",
        "decode_head.classifier.conv_seg.": "decode_head.conv_seg.",
    }

    def to_mmseg(key):
        for new, old in mmseg_names.items():
            key = key.replace(new, old)
        return key

    released = {
        "meta": {"CLASSES": ("a", "b", "c")},
        "state_dict": {to_mmseg(k): v for k, v in sd.items()},
    }
    assert "backbone.stem.7.weight" in released["state_dict"]
    for given in (ours, str(ours), sd, {"state_dict": sd}, ddp, released):
        target = toy_segmentor(1)
        assert not torch.equal(target.backbone.conv1[0].weight, source.backbone.conv1[0].weight)
        load_weights(target, given)
        assert_same_weights(target, source)
    wrapped = nn.DataParallel(toy_segmentor(1))
    load_weights(wrapped, ddp)
    assert_same_weights(wrapped.module, source)


def test_load_weights_lists_bad_keys():
    sd = dict(toy_segmentor(0).state_dict())
    sd.pop("decode_head.bn.weight")
    sd["decode_head.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        load_weights(toy_segmentor(1), {"state_dict": sd})
    message = str(info.value)
    assert "missing keys (1): ['decode_head.bn.weight']" in message
    assert "unexpected keys (1): ['decode_head.extra.weight']" in message
    target = toy_segmentor(1)
    load_weights(target, sd, strict=False)  # missing / unexpected allowed
    assert torch.equal(target.decode_head.bn.bias, sd["decode_head.bn.bias"])
    sd["decode_head.bn.bias"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"shape mismatches.*decode_head.bn.bias"):
        load_weights(toy_segmentor(1), sd, strict=False)
    with pytest.raises(ValueError, match="must be tensors"):
        load_weights(toy_segmentor(1), {"state_dict": {"a": 1}})
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_weights(toy_segmentor(1), "nowhere.pth")


# ---- RNG state ----


def draw():
    return (
        [random.random() for _ in range(3)] + [random.gauss(0, 1)],
        np.random.rand(3).tolist() + [np.random.standard_normal()],
        torch.rand(3).tolist() + torch.randn(1).tolist(),
    )


def test_rng_state_round_trip_through_a_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.standard_normal()  # leave a cached Gaussian in both
    path = tmp_path / "rng.pth"
    save_atomic({"rng": capture_rng_state()}, path)
    expected = draw()
    draw()  # move every stream on
    assert draw() != expected
    restore_rng_state(torch.load(path, weights_only=True)["rng"])
    assert draw() == expected


def test_restore_rng_state_rejects_foreign_dicts():
    with pytest.raises(ValueError, match="capture_rng_state"):
        restore_rng_state({"python": None})


@pytest.mark.gpu
def test_cuda_rng_state_round_trip_loaded_onto_the_gpu(tmp_path):
    torch.cuda.manual_seed_all(4)
    path = save_atomic({"rng": capture_rng_state()}, tmp_path / "rng.pth")
    expected = torch.rand(3, device="cuda").tolist(), draw()
    torch.rand(3, device="cuda")
    restore_rng_state(load_checkpoint(path, map_location="cuda")["rng"])
    assert (torch.rand(3, device="cuda").tolist(), draw()) == expected
