"""evaluate() on a few generated scenes with a tiny model, and the pictures it draws."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

import condnet.engine.evaluate as evaluate_module
from condnet.data import SCENE_CLASSES, SCENE_PALETTE, SceneDataset, eval_pipeline
from condnet.demo import write_scenes
from condnet.engine.evaluate import evaluate, has_guidance
from condnet.engine.visualize import denormalize, guidance_grid, overlay, save_image
from condnet.models import InferenceConfig, build_model
from tests.test_engine_metrics import assert_metrics_equal, reference_metrics

TINY = dict(backbone="resnet18_v1c", num_classes=8, channels=16, aux_channels=8, c1_channels=8)
K = len(SCENE_CLASSES)


def tiny_model(name="condnet_r50-d8_ade20k"):
    """A tiny model, its head jolted so that predictions vary (a fresh one predicts one class)."""
    torch.manual_seed(0)
    model = build_model(name, **TINY).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.decode_head.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def val_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, seed=0, num_train=0, num_val=4, size=48, image_format="png")
    # Images resized to 32 px high, labels stay 48 px high: predictions are scored at ori_shape.
    return SceneDataset(root, "val", pipeline=eval_pipeline(scale=(96, 32)))


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def reference_predictions(model, dataset, **kwargs):
    pairs = []
    for i in range(len(dataset)):
        sample = dataset[(i, 0)]
        logits = model.predict(sample["img"][None], out_size=sample["ori_shape"], **kwargs)
        pairs.append((logits.argmax(1)[0].numpy(), sample["gt_semantic_seg"].numpy()))
    return pairs


def run(model, dataset, **kwargs):
    kwargs.setdefault("progress", False)
    return evaluate(
        model, dataset, num_classes=K, class_names=SCENE_CLASSES, palette=SCENE_PALETTE, **kwargs
    )


def test_matches_reference_whole(model, val_set, capsys):
    pairs = reference_predictions(model, val_set)
    assert len(np.unique(np.concatenate([p.ravel() for p, _ in pairs]))) >= 3
    results = run(model, val_set, progress=True)
    assert_metrics_equal(results, reference_metrics(pairs, K))
    assert "4/4 images" in capsys.readouterr().err


def test_matches_reference_slide_multiscale_flip_batched(model, val_set):
    settings = dict(mode="slide", crop_size=(24, 24), stride=(16, 16), scales=(0.75, 1.0))
    pairs = reference_predictions(model, val_set, flip=True, **settings)
    whole = reference_metrics(reference_predictions(model, val_set), K)
    want = reference_metrics(pairs, K)
    assert want["mIoU"] != whole["mIoU"]  # the settings reach predict
    results = run(model, val_set, inference=InferenceConfig(flip=True, **settings), batch_size=2)
    assert_metrics_equal(results, want)


def test_state_is_left_alone(val_set):
    model = tiny_model()
    model.train()
    rng_before = torch.get_rng_state()
    run(model, val_set)
    assert model.training  # mode restored for the trainer
    assert torch.equal(torch.get_rng_state(), rng_before)  # training randomness untouched


def test_show_and_guidance_dirs(model, val_set, tmp_path):
    pairs = reference_predictions(model, val_set)
    run(model, val_set, show_dir=tmp_path / "show", guidance_dir=tmp_path / "guide", opacity=0.6)
    for i, (pred, label) in enumerate(pairs):
        stem = f"scene_{i:06d}"
        sample = val_set[(i, 0)]
        height, width = sample["ori_shape"]
        shown = np.asarray(Image.open(tmp_path / "show" / f"{stem}.png"))
        assert shown.shape == (height, width, 3)
        image = torch.nn.functional.interpolate(
            sample["img"][None], size=(height, width), mode="bilinear"
        )[0]
        want = overlay(denormalize(image, sample["img_norm_cfg"]), pred, SCENE_PALETTE, 0.6)
        np.testing.assert_array_equal(shown, want)

        present = np.union1d(np.unique(label[label != 255]), np.unique(pred))
        tiles = 1 + len(present)
        cols = math.ceil(math.sqrt(tiles))
        rows = math.ceil(tiles / cols)
        grid = np.asarray(Image.open(tmp_path / "guide" / f"{stem}.png"))
        assert grid.shape == (rows * (height + 2) - 2, cols * (width + 2) - 2, 3)


def test_each_rank_draws_its_own_images(model, val_set, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate_module, "_rank_world", lambda: (1, 2))
    run(model, val_set, show_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene_000001.png", "scene_000003.png"]


def test_amp_bf16_runs(model, val_set):
    results = run(model, val_set, amp="bf16")
    assert 0.0 <= results["aAcc"] <= 1.0


def test_errors(model, val_set, tmp_path):
    plain = build_model("condnet_r50-d8_ade20k-plain", **TINY)
    assert has_guidance(model) and not has_guidance(plain)
    with pytest.raises(ValueError, match="plain classifier"):
        run(plain, val_set, guidance_dir=tmp_path)
    with pytest.raises(ValueError, match="amp"):
        run(model, val_set, amp="fp8")
    with pytest.raises(ValueError, match="class_names has 3"):
        evaluate(model, val_set, num_classes=K, class_names=["a", "b", "c"], palette=SCENE_PALETTE)
    other = build_model("condnet_r50-d8_ade20k", **{**TINY, "num_classes": 5})
    with pytest.raises(ValueError, match="predicts 5 classes"):
        run(other, val_set)


def test_overlay():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    pred = np.array([[0, 1, 255], [1, 0, 7]])
    palette = [(200, 0, 0), (0, 50, 250)]
    out = overlay(image, pred, palette, opacity=0.5)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [150, 50, 50]
    assert out[0, 1].tolist() == [50, 75, 175]
    assert out[0, 2].tolist() == [100, 100, 100]  # ignore: the image shows
    assert out[1, 2].tolist() == [100, 100, 100]  # outside the palette: too
    assert overlay(image, pred, palette, opacity=1.0)[1, 0].tolist() == [0, 50, 250]
    with pytest.raises(ValueError, match="image's size"):
        overlay(image, pred[:, :2], palette)
    with pytest.raises(ValueError, match="uint8"):
        overlay(image.astype(np.float32), pred, palette)
    with pytest.raises(ValueError, match="opacity"):
        overlay(image, pred, palette, opacity=1.5)


def test_guidance_grid_layout_and_masks(tmp_path):
    image = np.full((20, 30, 3), 200, dtype=np.uint8)
    probs = torch.zeros(4, 10, 15)
    probs[1] = 1.0  # class 1 certain everywhere; class 3 nowhere
    grid = guidance_grid(image, probs, [1, 3], ["a", "b", "c", "d"], [(9, 9, 9)] * 4)
    assert grid.shape == (2 * 22 - 2, 2 * 32 - 2, 3)  # 3 tiles in 2 columns
    # Bottom-right corners of the cells (away from the labels): image, class 1, class 3, empty.
    assert (grid[15:20, 25:30] == 200).all()  # the image tile is the image
    assert grid[15:20, 32 + 25 : 32 + 30].tolist() == [[[252, 255, 164]] * 5] * 5  # p = 1: hot
    assert (grid[22 + 15 : 22 + 20, 25:30] == 70).all()  # p = 0: the image dimmed to 35%
    assert (grid[-3:, -3:] == 0).all()  # the fourth cell is empty
    assert guidance_grid(image, probs, [1, 3], "abcd", [(0, 0, 0)] * 4, columns=3).shape == (
        20,
        3 * 32 - 2,
        3,
    )
    with pytest.raises(ValueError, match=r"class_ids \[4\]"):
        guidance_grid(image, probs, [4], "abcd", [(0, 0, 0)] * 4)
    with pytest.raises(ValueError, match="3 names for 4"):
        guidance_grid(image, probs, [1], "abc", [(0, 0, 0)] * 4)
    path = save_image(grid, tmp_path / "a" / "b" / "grid.png")
    assert np.array_equal(np.asarray(Image.open(path)), grid)
    with pytest.raises(ValueError, match="uint8"):
        save_image(grid.astype(np.float32), tmp_path / "x.png")


def test_guidance_accuracy_counts_the_guide_argmax_against_the_resized_label(model, val_set):
    right = total = 0
    for i in range(len(val_set)):
        sample = val_set[(i, 0)]
        with torch.no_grad():
            _, guide = model.decode(sample["img"][None])
        label = sample["gt_semantic_seg"]
        small = torch.nn.functional.interpolate(
            label[None, None].float(), size=guide.shape[-2:], mode="nearest"
        )[0, 0].long()
        scored = small != 255
        right += int(((guide[0].argmax(0) == small) & scored).sum())
        total += int(scored.sum())
    results = run(model, val_set, guidance_accuracy=True)
    assert total > 0 and results["acc_guidance"] == pytest.approx(right / total, abs=1e-12)
    assert "acc_guidance" not in run(model, val_set)


def test_guidance_accuracy_needs_a_condnet_model(val_set):
    with pytest.raises(ValueError, match="guidance_accuracy needs a CondNet model"):
        run(tiny_model("condnet_r50-d8_ade20k-plain"), val_set, guidance_accuracy=True)
