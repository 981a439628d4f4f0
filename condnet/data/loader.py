"""Reproducible data loading: a seeded sampler, worker seeding and batch collation.

:class:`SeededSampler` draws, in the main process, the sample order *and* one
augmentation seed per sample from ``(seed, epoch)``; it yields
``(index, sample_seed)`` keys that a :class:`~condnet.data.SegDataset` turns into
``numpy.random.default_rng(sample_seed)``. A batch therefore depends only on the
seed, the epoch and the position, not on ``num_workers`` or on which worker
decoded it. The epoch advances by one at each pass over the sampler (or is set
with :meth:`SeededSampler.set_epoch`).

:func:`worker_init_fn` also seeds Python's ``random`` and numpy's global generator
in each worker from the worker's torch seed, for third-party transforms that use
them. :func:`build_dataloader` wires all of it together.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence, Sized

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


class SeededSampler(Sampler):
    """Yields ``(index, sample_seed)`` pairs, shuffled and seeded from ``(seed, epoch)``.

    With ``world_size > 1`` rank ``rank`` gets every ``world_size``-th position of
    the epoch's order (padded by wrapping around so every rank has equally many).

    Each ``iter()`` runs one epoch and moves on to the next. ``set_epoch(e, start)``
    picks the epoch and skips the first ``start`` items of this rank's order once,
    so a resumed run continues exactly where the interrupted one stopped.
    """

    def __init__(
        self,
        data_source: Sized | int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.size = data_source if isinstance(data_source, int) else len(data_source)
        if self.size <= 0:
            raise ValueError("SeededSampler needs a non-empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, {world_size})")
        self.seed = int(seed)
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if not 0 <= start <= len(self):
            raise ValueError(f"start must be in [0, {len(self)}]; got {start}")
        self.epoch = int(epoch)
        self.start = int(start)

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        seeds = rng.integers(0, 2**63 - 1, size=self.size, dtype=np.int64)
        total = len(self) * self.world_size
        positions = np.arange(total) % self.size  # wrap around to pad
        positions = positions[self.rank :: self.world_size][self.start :]
        self.start = 0
        return iter(zip(order[positions].tolist(), seeds[positions].tolist(), strict=True))


def worker_init_fn(worker_id: int) -> None:
    """Seed ``random`` and ``numpy.random`` in a DataLoader worker from its torch seed.

    The worker's torch seed is the loader's per-epoch base seed plus ``worker_id``
    (reproducible when the loader has a seeded ``generator``). Recent torch already
    seeds both per worker; this keeps the rule explicit and independent of that.
    """
    seed = torch.initial_seed()
    random.seed(seed)
    np.random.seed(seed % 2**32)


def collate_samples(batch: Sequence[dict]) -> dict:
    """Collate sample dicts into one dict of batched values.

    Tensors of equal shape are stacked (``img`` -> ``Bx3xHxW``,
    ``gt_semantic_seg`` -> ``BxHxW``); tensors of different shapes (evaluation
    at original sizes) and all other values (metadata) become lists.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, object] = {}
    for key in batch[0]:
        values = [sample[key] for sample in batch]
        if (
            all(isinstance(v, torch.Tensor) for v in values)
            and len({tuple(v.shape) for v in values}) == 1
        ):
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out


def build_dataloader(
    dataset,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    rank: int = 0,
    world_size: int = 1,
    **kwargs,
) -> DataLoader:
    """A ``DataLoader`` whose order and augmentation are reproducible from ``seed``.

    Uses :class:`SeededSampler`, :func:`collate_samples` and :func:`worker_init_fn`,
    and a torch generator seeded with ``seed``. Extra keyword arguments go to
    ``DataLoader`` (e.g. ``prefetch_factor``).
    """
    sampler = SeededSampler(dataset, seed=seed, shuffle=shuffle, rank=rank, world_size=world_size)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_samples,
        worker_init_fn=worker_init_fn,
        generator=generator,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        **kwargs,
    )
