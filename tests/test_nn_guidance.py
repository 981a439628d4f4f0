"""condnet.nn.guidance_loss: the Dice guidance loss of a converted network (the Dice
loss itself lives in condnet.nn and is re-exported by condnet.models.losses),
its hand-over of the guide logits (no graph outlives a step) and a
two-process DistributedDataParallel run on gloo."""

import gc
import time
import weakref

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from condnet.models import losses
from condnet.nn import dice_guidance_loss, guidance_loss, make_conditional

K = 4


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, K, 1))


def batch(n=2, seed=1, size=8):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, 3, size, size, generator=g)
    label = torch.randint(0, K, (n, 2 * size, 2 * size), generator=g)  # image size: 2x
    label[:, :2] = 255
    return img, label


def test_the_dice_loss_lives_in_nn_and_models_re_exports_it():
    assert losses.dice_guidance_loss is dice_guidance_loss
    assert "dice_guidance_loss" in losses.__all__
    assert dice_guidance_loss.__module__ == "condnet.nn.guidance"


def test_loss_is_the_dice_of_the_last_training_forward():
    model = make_conditional(small_net()).train()
    img, label = batch()
    model(img + 1)
    model(img)  # the last forward counts
    guide = model[2].guide_logits
    assert guide.shape == (2, K, 8, 8) and guide.requires_grad
    loss = guidance_loss(model, label)
    torch.testing.assert_close(loss, dice_guidance_loss(guide, label))
    assert model[2].guide_logits is None
    with pytest.raises(ValueError, match=r"no guide logits recorded for \['2'\]"):
        guidance_loss(model, label)


def test_eval_and_no_grad_forwards_record_nothing_and_eval_drops():
    model = make_conditional(small_net())
    img, label = batch()
    with torch.no_grad():
        model.train()(img)
    assert model[2].guide_logits is None
    model.eval()(img)
    assert model[2].guide_logits is None
    model.train()(img)
    assert model[2].guide_logits is not None
    model.eval()
    assert model[2].guide_logits is None


def test_two_classifiers_add_up_and_a_bad_label_keeps_the_guides():
    net = small_net()
    net.add_module("3", nn.Conv2d(K, K, 1))  # a second K-channel classifier
    model = make_conditional(net, ["2", "3"]).train()
    img, label = batch()
    model(img)
    guides = [model[2].guide_logits, model[3].guide_logits]
    with pytest.raises(ValueError, match="outside"):
        guidance_loss(model, label + 10)
    assert model[2].guide_logits is guides[0]
    loss = guidance_loss(model, label, ignore_mode="released")
    want = sum(dice_guidance_loss(g, label, ignore_mode="released") for g in guides)
    torch.testing.assert_close(loss, want)


def test_no_graph_outlives_a_step():
    model = make_conditional(small_net()).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    img, label = batch()
    refs = []
    for _ in range(3):
        out = model(img)
        guide = model[2].guide_logits
        refs.append((weakref.ref(guide), weakref.ref(out)))
        del guide
        loss = F.cross_entropy(F.interpolate(out, size=label.shape[-2:]), label, ignore_index=255)
        loss = loss + 0.2 * guidance_loss(model, label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        del out, loss
        gc.collect()
        assert all(ref() is None for pair in refs for ref in pair)
    assert model[2].guide_logits is None


def test_errors():
    img, label = batch()
    with pytest.raises(ValueError, match="no conditional classifier made by"):
        guidance_loss(small_net(), label)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        guidance_loss(None, label)


# --- DistributedDataParallel, 2 processes on gloo ------------------------------------


def _train(model, img, label, steps, lr=0.5):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        out = model(img)
        loss = F.cross_entropy(F.interpolate(out, size=label.shape[-2:]), label, ignore_index=255)
        # ignore_index rows are the same in every image, so every rank counts
        # the same pixels and DDP's gradient mean is the full batch's.
        loss = loss + 0.2 * guidance_loss(model, label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _ddp_worker(rank, world_size, store, results, steps):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        out = {}
        img, label = batch(n=2 * world_size)
        part = slice(2 * rank, 2 * rank + 2)
        for unused in (False, True):
            model = make_conditional(small_net()).train()
            ddp = DistributedDataParallel(model, find_unused_parameters=unused)
            _train(ddp, img[part], label[part], steps)
            out[unused] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            out[f"held_{unused}"] = model[2].guide_logits is not None
        torch.save(out, f"{results}/rank{rank}.pt")
        # Both ranks past their last collective before either tears down: gloo
        # can abort a process whose peer closes the connection first.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_one_process_on_the_full_batch(tmp_path):
    steps, world_size = 2, 2
    context = mp.start_processes(
        _ddp_worker,
        args=(world_size, tmp_path / "store", tmp_path, steps),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the DDP workers did not finish within 120 s")
    model = make_conditional(small_net()).train()
    img, label = batch(n=2 * world_size)
    _train(model, img, label, steps)
    want = model.state_dict()
    for rank in range(world_size):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for unused in (False, True):
            assert not result[f"held_{unused}"]
            for key, value in want.items():
                torch.testing.assert_close(result[unused][key], value, msg=key)
