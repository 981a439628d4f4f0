"""Reproducible loading: seeded sampler, worker seeding, collation."""

import numpy as np
import pytest
import torch

from condnet.data import (
    SceneDataset,
    SeededSampler,
    build_dataloader,
    collate_samples,
    eval_pipeline,
    train_pipeline,
)
from condnet.demo import write_scenes


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, seed=0, num_train=8, num_val=3, size=32, image_format="png")
    return root


def train_set(root):
    return SceneDataset(root, "train", pipeline=train_pipeline(scale=(64, 32), crop_size=(24, 24)))


def epochs(loader, count):
    return [list(loader) for _ in range(count)]


def assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b, strict=True):
        assert a["filename"] == b["filename"]
        assert torch.equal(a["img"], b["img"])
        assert torch.equal(a["gt_semantic_seg"], b["gt_semantic_seg"])


def test_same_seed_same_batches_with_two_workers(scenes):
    ds = train_set(scenes)
    first = epochs(build_dataloader(ds, 3, seed=5, num_workers=2), 2)
    second = epochs(build_dataloader(ds, 3, seed=5, num_workers=2), 2)
    for a, b in zip(first, second, strict=True):
        assert_same(a, b)
    assert first[0][0]["img"].shape == (3, 3, 24, 24)
    # the epochs differ from each other, and another seed differs
    assert first[0][0]["filename"] != first[1][0]["filename"] or not torch.equal(
        first[0][0]["img"], first[1][0]["img"]
    )
    other = list(build_dataloader(ds, 3, seed=6, num_workers=2))
    assert not all(torch.equal(a["img"], b["img"]) for a, b in zip(first[0], other, strict=True))


def test_batches_do_not_depend_on_the_number_of_workers(scenes):
    ds = train_set(scenes)
    assert_same(
        list(build_dataloader(ds, 4, seed=1, num_workers=0)),
        list(build_dataloader(ds, 4, seed=1, num_workers=2)),
    )


class GlobalNumpyNoise(torch.utils.data.Dataset):
    """A dataset using numpy's global generator, as third-party transforms do."""

    def __len__(self):
        return 4

    def __getitem__(self, key):
        return {"value": torch.tensor(np.random.random())}


def test_worker_init_fn_seeds_each_worker_differently_and_reproducibly():
    values = [
        torch.cat(
            [
                b["value"]
                for b in build_dataloader(
                    GlobalNumpyNoise(), 1, seed=2, shuffle=False, num_workers=2
                )
            ]
        )
        for _ in range(2)
    ]
    assert torch.equal(values[0], values[1])
    # workers 0 and 1 handle alternate batches: forked copies of one numpy state would repeat
    assert values[0][0] != values[0][1]


def test_sampler_covers_the_dataset_each_epoch_and_splits_across_ranks():
    sampler = SeededSampler(10, seed=3)
    first, second = list(sampler), list(sampler)
    assert sorted(i for i, _ in first) == list(range(10))
    assert [i for i, _ in first] != [i for i, _ in second]  # the epoch advanced
    sampler.set_epoch(0)
    assert list(sampler) == first
    ranks = [list(SeededSampler(10, seed=3, rank=r, world_size=3)) for r in range(3)]
    assert [len(r) for r in ranks] == [4, 4, 4]
    assert {i for r in ranks for i, _ in r} == set(range(10))
    assert [i for i, _ in list(SeededSampler(4, shuffle=False))] == [0, 1, 2, 3]


def test_sampler_resumes_mid_epoch_once():
    sampler = SeededSampler(10, seed=3, rank=1, world_size=2)
    full = list(sampler)
    sampler.set_epoch(0, start=3)
    assert list(sampler) == full[3:]
    assert sampler.epoch == 1
    sampler.set_epoch(0)
    assert list(sampler) == full  # the skip applied to one epoch only
    with pytest.raises(ValueError, match=r"start must be in \[0, 5\]; got 6"):
        sampler.set_epoch(0, start=6)


def test_integer_indexing_follows_torch_manual_seed(scenes):
    ds = train_set(scenes)
    torch.manual_seed(11)
    a = ds[0]
    torch.manual_seed(11)
    b = ds[0]
    c = ds[0]
    assert torch.equal(a["img"], b["img"]) and not torch.equal(b["img"], c["img"])


def test_collate_stacks_equal_shapes_and_lists_the_rest(scenes):
    ds = SceneDataset(scenes, "val", pipeline=eval_pipeline(scale=(64, 32)))
    samples = [ds[i] for i in range(3)]
    batch = collate_samples(samples)
    assert isinstance(batch["gt_semantic_seg"], list)  # evaluation: original sizes differ
    assert [tuple(g.shape) for g in batch["gt_semantic_seg"]] == batch["ori_shape"]
    assert len({s["img"].shape for s in samples}) > 1 and isinstance(batch["img"], list)
    assert batch["filename"] == [s["filename"] for s in samples]
    same = collate_samples(
        [
            {"img": torch.zeros(3, 4, 5), "flip": True, "ori_shape": (4, 5)},
            {"img": torch.ones(3, 4, 5), "flip": False, "ori_shape": (6, 7)},
        ]
    )
    assert same["img"].shape == (2, 3, 4, 5) and same["img"][1].eq(1).all()
    assert same["flip"] == [True, False] and same["ori_shape"] == [(4, 5), (6, 7)]
