"""ConfusionMatrix and format_table against a per-pixel reference written with plain loops."""

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from condnet.engine.metrics import ConfusionMatrix, format_table

IGNORE = 255


def reference_metrics(pairs, num_classes, ignore=IGNORE):
    """Per-pixel loops over (pred, label) arrays: the mmseg definitions, written out."""
    inter = [0] * num_classes
    area_label = [0] * num_classes
    area_pred = [0] * num_classes
    for pred, label in pairs:
        flat = zip(
            np.asarray(pred).ravel().tolist(), np.asarray(label).ravel().tolist(), strict=True
        )
        for p, g in flat:
            if g == ignore:
                continue
            area_label[g] += 1
            area_pred[p] += 1
            if p == g:
                inter[g] += 1
    iou, acc = [], []
    for k in range(num_classes):
        union = area_label[k] + area_pred[k] - inter[k]
        iou.append(inter[k] / union if union else math.nan)
        acc.append(inter[k] / area_label[k] if area_label[k] else math.nan)

    def mean(values):
        kept = [v for v in values if not math.isnan(v)]
        return sum(kept) / len(kept) if kept else math.nan

    total = sum(area_label)
    return {
        "aAcc": sum(inter) / total if total else math.nan,
        "mIoU": mean(iou),
        "mAcc": mean(acc),
        "IoU": iou,
        "Acc": acc,
    }


def assert_metrics_equal(got, want):
    assert set(got) == set(want)
    for key in ("aAcc", "mIoU", "mAcc"):
        assert got[key] == pytest.approx(want[key], nan_ok=True, abs=1e-12), key
    for key in ("IoU", "Acc"):
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-12, equal_nan=True)


def random_pairs(rng, num_classes, count=3, shape=(7, 9)):
    pairs = []
    for _ in range(count):
        pred = rng.integers(0, num_classes, size=shape)
        label = rng.integers(0, num_classes, size=shape)
        label[rng.random(shape) < 0.2] = IGNORE
        pairs.append((pred, label))
    return pairs


def test_matches_reference_with_ignore_and_batches():
    rng = np.random.default_rng(0)
    pairs = random_pairs(rng, 5, count=4)
    cm = ConfusionMatrix(5)
    cm.update(torch.from_numpy(pairs[0][0]), torch.from_numpy(pairs[0][1]))
    batch_pred = torch.from_numpy(np.stack([p for p, _ in pairs[1:]]))
    batch_label = torch.from_numpy(np.stack([g for _, g in pairs[1:]]))
    cm.update(batch_pred.int(), batch_label)  # a (B, H, W) batch, int32 predictions
    assert cm.matrix.dtype == torch.int64
    assert int(cm.matrix.sum()) == sum(int((g != IGNORE).sum()) for _, g in pairs)
    assert_metrics_equal(cm.compute(), reference_metrics(pairs, 5))


def test_absent_classes_are_nan_and_left_out_of_means():
    # Class 0: labelled and predicted. Class 1: labelled, never predicted (IoU 0, Acc 0).
    # Class 2: predicted, never labelled (IoU 0, Acc NaN). Class 3: absent (both NaN).
    label = torch.tensor([[0, 0, 1, 1], [0, 0, 255, 255]])
    pred = torch.tensor([[0, 0, 2, 2], [0, 2, 3, 1]])  # preds under 255 labels do not count
    cm = ConfusionMatrix(4)
    cm.update(pred, label)
    out = cm.compute()
    assert out["IoU"][0] == pytest.approx(3 / 4)
    assert out["IoU"][1] == 0.0 and out["Acc"][1] == 0.0
    assert out["IoU"][2] == 0.0 and math.isnan(out["Acc"][2])
    assert math.isnan(out["IoU"][3]) and math.isnan(out["Acc"][3])
    assert out["mIoU"] == pytest.approx((3 / 4 + 0 + 0) / 3)
    assert out["mAcc"] == pytest.approx((3 / 4 + 0) / 2)
    assert out["aAcc"] == pytest.approx(3 / 6)
    assert_metrics_equal(out, reference_metrics([(pred.numpy(), label.numpy())], 4))


def test_perfect_and_empty():
    label = torch.tensor([[0, 1], [2, 255]])
    cm = ConfusionMatrix(3)
    assert math.isnan(cm.compute()["mIoU"]) and math.isnan(cm.compute()["aAcc"])
    cm.update(label.clamp(max=2), label)
    out = cm.compute()
    assert out["aAcc"] == out["mIoU"] == out["mAcc"] == 1.0
    cm.update(torch.full((2, 2), 0), torch.full((2, 2), 255))  # all ignored: no change
    assert cm.compute()["mIoU"] == 1.0
    cm.reset()
    assert int(cm.matrix.sum()) == 0


def test_input_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="same shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class indices"):
        cm.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="label must"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), [[0, 0], [0, 0]])
    with pytest.raises(ValueError, match=r"\(H, W\) or \(B, H, W\)"):
        cm.update(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"label values \[7\]"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 7], [1, 255]]))
    with pytest.raises(ValueError, match=r"pred values \[3\]"):
        cm.update(torch.tensor([[3, 0]]), torch.tensor([[0, 0]]))
    assert int(cm.matrix.sum()) == 0  # failed updates count nothing
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)
    with pytest.raises(ValueError, match="ignore_index"):
        ConfusionMatrix(300, ignore_index=255)


def test_format_table():
    results = {
        "aAcc": 0.5,
        "mIoU": 0.25,
        "mAcc": 0.375,
        "IoU": [0.75, 0.0, math.nan],
        "Acc": [0.123456, math.nan, math.nan],
    }
    text = format_table(results, ["road", "a long class name", "sky"])
    lines = text.splitlines()
    assert any("road" in line and "75.00" in line and "12.35" in line for line in lines)
    assert any("sky" in line and line.count("nan") == 2 for line in lines)
    assert any("50.00" in line and "25.00" in line and "37.50" in line for line in lines)
    rows = [line for line in lines if line.startswith("|")]
    assert len({len(line) for line in rows[:4]}) == 1  # per-class rows aligned
    with pytest.raises(ValueError, match="2 names for 3 classes"):
        format_table(results, ["road", "sky"])
    with pytest.raises(ValueError, match="lacks"):
        format_table({"mIoU": 0.1}, ["road"])


def _reduce_worker(rank, world_size, init_file, pairs, out_file):
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        cm = ConfusionMatrix(4)
        for pred, label in pairs[rank::world_size]:
            cm.update(torch.from_numpy(pred), torch.from_numpy(label))
        cm.all_reduce()
        torch.save(cm.matrix, f"{out_file}.{rank}")
        # Both ranks past their last collective before either tears down: gloo
        # can abort a process whose peer closes the connection first.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_all_reduce_two_processes_gloo(tmp_path):
    pairs = random_pairs(np.random.default_rng(1), 4, count=5)
    out_file = tmp_path / "matrix"
    mp.spawn(
        _reduce_worker,
        args=(2, str(tmp_path / "store"), pairs, str(out_file)),
        nprocs=2,
        join=True,
    )
    single = ConfusionMatrix(4)
    for pred, label in pairs:
        single.update(torch.from_numpy(pred), torch.from_numpy(label))
    for rank in range(2):
        matrix = torch.load(f"{out_file}.{rank}")
        assert torch.equal(matrix, single.matrix)
    assert_metrics_equal(single.compute(), reference_metrics(pairs, 4))


def test_all_reduce_without_process_group_is_a_no_op():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
    before = cm.matrix.clone()
    assert cm.all_reduce() is cm
    assert torch.equal(cm.matrix, before)
