"""The demo's figures (condnet.demo.figures): predictions_figure (column titles and a
class legend), present_classes, save_figures (predictions.png with a column per arm,
masks.png with a block per conditional arm per image) with tiny models, and the
learning curves (mean line and min-max band placed where their values say)."""

import numpy as np
import pytest
import torch
from PIL import Image

from condnet import ops
from condnet.demo.figures import (
    ARM_COLOURS,
    MASK_TITLES,
    class_masks,
    learning_curves_figure,
    predictions_figure,
    present_classes,
    save_figures,
    save_learning_curves,
)
from condnet.demo.figures import (
    TITLES as ARM_TITLES,
)
from condnet.engine.visualize import guidance_grid
from condnet.models import build_model
from condnet.models.zoo import ModelConfig
from condnet.nn import ContextAwareClassifier

TITLES = ("image", "ground truth", "plain", "CondNet")
NAMES = ("sky", "road", "car", "tree")
# Colours no panel below uses, so a legend swatch is found by its colour.
PALETTE = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (200, 200, 10)]
WHITE = 255


def panels(height=20, width=30, rows=2, columns=4):
    """rows x columns panels, each one flat colour (not a grey the text could draw)."""
    return [
        [np.full((height, width, 3), flat(i * columns + j + 1), np.uint8) for j in range(columns)]
        for i in range(rows)
    ]


def flat(index):
    return (index * 7, 123, 45)


def find(figure, panel):
    """(y, x) of the top-left of the block of ``panel``'s flat colour in ``figure``."""
    hits = np.argwhere((figure == panel[0, 0]).all(axis=2))
    assert len(hits), "panel not found"
    y, x = hits.min(axis=0)
    h, w = panel.shape[:2]
    assert np.array_equal(figure[y : y + h, x : x + w], panel)
    return int(y), int(x)


def locate(figure, panel):
    """(y, x) of the one place where ``panel`` appears, pixel for pixel, in ``figure``."""
    h, w = panel.shape[:2]
    places = [
        (int(y), int(x))
        for y, x in np.argwhere((figure == panel[0, 0]).all(axis=2))
        if np.array_equal(figure[y : y + h, x : x + w], panel)
    ]
    assert len(places) == 1, places
    return places[0]


def has_colour(region, colour):
    return bool((region == np.array(colour, np.uint8)).all(axis=2).any())


def test_predictions_figure_layout():
    rows = panels()
    figure = predictions_figure(rows, TITLES, NAMES, PALETTE, font_size=12)
    assert figure.dtype == np.uint8 and figure.ndim == 3 and figure.shape[2] == 3
    assert figure.shape[1] >= 4 * 30 + 3 * 4
    # Every panel is there, unchanged, in its row and column, below the title strip.
    y0, x0 = find(figure, rows[0][0])
    assert y0 >= 12
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            assert find(figure, panel) == (y0 + i * (20 + 4), x0 + j * (30 + 4))
    grid_bottom = y0 + 2 * 20 + 4
    # The titles are ink above each column; the legend below the grid holds every swatch.
    for j in range(4):
        above = figure[:y0, x0 + j * 34 : x0 + j * 34 + 30]
        assert (above < 128).all(axis=2).any(), f"no title above column {j}"
    legend = figure[grid_bottom:]
    for colour in PALETTE:
        assert has_colour(legend, colour)
    assert not has_colour(figure[:grid_bottom], PALETTE[0])


def test_titles_and_legend_add_pixels():
    rows = panels()
    bare_height = 2 * 20 + 4
    untitled = predictions_figure(rows, [""] * 4, NAMES, PALETTE, legend_classes=[], font_size=12)
    titled = predictions_figure(rows, TITLES, NAMES, PALETTE, legend_classes=[], font_size=12)
    legend = predictions_figure(rows, TITLES, NAMES, PALETTE, font_size=12)
    assert untitled.shape[0] > bare_height  # the title strip is there even when empty
    assert titled.shape == untitled.shape and not np.array_equal(titled, untitled)
    y0, _ = find(untitled, rows[0][0])
    assert (untitled[:y0] == WHITE).all()  # empty titles draw nothing
    assert (titled[:y0] != WHITE).any()
    assert np.array_equal(titled[y0:], untitled[y0:])  # titles change the strip only
    assert legend.shape[0] > titled.shape[0] and legend.shape[1] == titled.shape[1]
    assert np.array_equal(legend[: titled.shape[0] - 4], titled[:-4])


def test_legend_lists_the_given_classes_in_rows():
    rows = panels()
    figure = predictions_figure(rows, TITLES, NAMES, PALETTE, legend_classes=[3, 1], font_size=12)
    assert has_colour(figure, PALETTE[1]) and has_colour(figure, PALETTE[3])
    assert not has_colour(figure, PALETTE[0]) and not has_colour(figure, PALETTE[2])
    # Listed in the given order: class 3's swatch left of class 1's.
    x3 = np.argwhere((figure == PALETTE[3]).all(axis=2))[:, 1].min()
    x1 = np.argwhere((figure == PALETTE[1]).all(axis=2))[:, 1].min()
    assert x3 < x1
    # Many long names in a narrow figure wrap onto more legend lines, not a wider figure.
    names = [f"class {k}" for k in range(12)]
    palette = [(k * 20, 0, 250) for k in range(12)]
    narrow = [[np.zeros((20, 30, 3), np.uint8)] * 2]
    two = predictions_figure(narrow, ["a", "b"], names, palette, legend_classes=[0], font_size=12)
    twelve = predictions_figure(narrow, ["a", "b"], names, palette, font_size=12)
    assert twelve.shape[1] == two.shape[1] and twelve.shape[0] > two.shape[0] + 2 * 12
    lines = {int(y) for y in np.argwhere((twelve == palette[11]).all(axis=2))[:, 0]}
    assert min(lines) > np.argwhere((twelve == palette[0]).all(axis=2))[:, 0].max()


def test_long_titles_stay_over_their_column():
    rows = panels(rows=1)
    figure = predictions_figure(
        rows, ["a title far wider than its column", "", "", ""], NAMES, PALETTE, font_size=12
    )
    y0, x0 = find(figure, rows[0][0])
    assert (figure[:y0, x0 + 30 :] == WHITE).all()
    assert (figure[:y0, x0 : x0 + 30] != WHITE).any()


def ink_height(figure, stop):
    """Rows holding dark pixels above row ``stop``."""
    dark = (figure[:stop] < 100).all(axis=2).any(axis=1)
    rows = np.flatnonzero(dark)
    return int(rows.max() - rows.min() + 1)


def test_text_grows_with_the_panels():
    small = panels(rows=1)
    demo = [[np.full((192, 192, 3), p[0, 0], np.uint8) for p in small[0]]]
    fig_small = predictions_figure(small, ["Ag"] * 4, NAMES, PALETTE, legend_classes=[])
    fig_demo = predictions_figure(demo, ["Ag"] * 4, NAMES, PALETTE, legend_classes=[])
    y_small, _ = find(fig_small, small[0][0])
    y_demo, _ = find(fig_demo, demo[0][0])
    # About 15 px text at the demo's 192-pixel scenes, PIL's 10 px on small panels.
    assert ink_height(fig_demo, y_demo) >= 13 > ink_height(fig_small, y_small)
    bigger = predictions_figure(small, ["Ag"] * 4, NAMES, PALETTE, legend_classes=[], font_size=24)
    assert bigger.shape[0] > fig_small.shape[0]


def test_panels_of_different_sizes():
    rows = [
        [np.full((20, 30, 3), flat(1), np.uint8), np.full((20, 10, 3), flat(2), np.uint8)],
        [np.full((25, 12, 3), flat(3), np.uint8), np.full((25, 40, 3), flat(4), np.uint8)],
    ]
    figure = predictions_figure(rows, ["a", "b"], NAMES, PALETTE, legend_classes=[])
    y0, x0 = find(figure, rows[0][0])
    assert find(figure, rows[0][1]) == (y0, x0 + 30 + 4)
    assert find(figure, rows[1][0]) == (y0 + 20 + 4, x0)
    assert find(figure, rows[1][1]) == (y0 + 20 + 4, x0 + 30 + 4)
    assert figure.shape[1] >= 30 + 4 + 40


BAD_FIGURES = {
    "titles as a str": (dict(titles="image"), "titles must be"),
    "no titles": (dict(titles=[]), "titles must be"),
    "a title not a str": (dict(titles=["a", "b", "c", 4]), "titles must be"),
    "no rows": (dict(rows=[]), "rows must be"),
    "short row": (dict(rows=[panels()[0][:3]]), r"rows\[0\] must hold 4 panels"),
    "float panel": (
        dict(rows=[panels()[0][:3] + [np.zeros((20, 30, 3), np.float32)]]),
        r"rows\[0\]\[3\] must be a uint8",
    ),
    "grey panel": (
        dict(rows=[panels()[0][:3] + [np.zeros((20, 30), np.uint8)]]),
        r"rows\[0\]\[3\] must be a uint8",
    ),
    "names for another palette": (dict(class_names=NAMES[:3]), r"palette colour \(4\); got 3"),
    "bad palette": (dict(palette=[(1, 2)] * 4), "palette must be"),
    "legend class out of range": (dict(legend_classes=[1, 4]), r"legend_classes \[4\] outside"),
    "font size zero": (dict(font_size=0), "font_size must be"),
    "font size bool": (dict(font_size=True), "font_size must be"),
}


@pytest.mark.parametrize("case", BAD_FIGURES, ids=list(BAD_FIGURES))
def test_predictions_figure_errors(case):
    changes, match = BAD_FIGURES[case]
    kwargs = {**dict(rows=panels(), titles=TITLES, class_names=NAMES, palette=PALETTE), **changes}
    with pytest.raises(ValueError, match=match):
        predictions_figure(**kwargs)


def test_present_classes():
    label = np.array([[0, 255], [3, 3]])
    pred = torch.tensor([[1, 1], [9, -1]])
    assert present_classes([label, pred], 4) == [0, 1, 3]
    assert present_classes([], 4) == []
    with pytest.raises(ValueError, match=r"maps\[1\] must hold integer"):
        present_classes([label, label.astype(np.float32)], 4)
    with pytest.raises(ValueError, match="num_classes"):
        present_classes([label], 0)


# save_figures with tiny models on a tiny validation set.

CLASS_NAMES = ("sky", "road", "car")
CLASS_PALETTE = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
SIZE = (40, 48)  # the validation images' (H, W)
NORM = {"mean": [120.0, 110.0, 100.0], "std": [60.0, 50.0, 55.0]}
ARM_CLASSIFIER = {"plain": "plain", "condnet": "conditional", "cac": "cac"}


class TinyValSet:
    """Three validation samples as the demo's set gives them: a normalised (3, H, W)
    image, its int64 (H, W) label (255 in a corner) and the normalisation."""

    classes = CLASS_NAMES
    palette = CLASS_PALETTE

    def __len__(self):
        return 3

    def __getitem__(self, index):
        rng = np.random.default_rng(index)
        label = np.zeros(SIZE, np.int64)
        label[:, SIZE[1] // 3 :] = 1
        label[SIZE[0] // 2 :, SIZE[1] // 2 :] = 2 if index != 1 else 1  # image 1: no car
        label[:3, :3] = 255
        colours = rng.integers(0, 256, (3, 3))
        image = colours[np.clip(label, 0, 2)] + rng.normal(0, 12, (*SIZE, 3))
        mean, std = np.array(NORM["mean"]), np.array(NORM["std"])
        img = torch.tensor(((image - mean) / std).transpose(2, 0, 1), dtype=torch.float32)
        return {"img": img, "gt_semantic_seg": torch.from_numpy(label), "img_norm_cfg": NORM}


def tiny_model(arm, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(
        backbone="resnet18_v1c",
        head="sep_aspp",
        num_classes=len(CLASS_NAMES),
        classifier=ARM_CLASSIFIER[arm],
        channels=16,
        c1_channels=8,
        dilations=(1, 2),
        auxiliary=False,
    )
    return build_model(config)


@pytest.fixture(scope="module")
def models():
    return {arm: tiny_model(arm, seed) for seed, arm in enumerate(("plain", "condnet", "cac"))}


IOUS = {
    "plain": {"sky": 50.0, "road": 40.0, "car": 10.0},
    "condnet": {"sky": 61.5, "road": 42.0, "car": 12.25},
    "cac": {"sky": 70.0, "road": 33.3, "car": 0.0},
}


def image_of(sample):
    return Image.fromarray(
        np.clip(
            np.rint(
                sample["img"].numpy().transpose(1, 2, 0) * NORM["std"] + np.array(NORM["mean"])
            ),
            0,
            255,
        ).astype(np.uint8)
    )


def expected_masks(model, arm, sample):
    """The arm's class masks at image size, computed another way than class_masks:
    CondNet's from decode's guide, CAC's as the fused op's static logits."""
    img = sample["img"][None]
    with torch.no_grad():
        if arm == "condnet":
            probs = model.decode(img)[1].softmax(1)
        else:
            clf = next(m for m in model.modules() if isinstance(m, ContextAwareClassifier))
            seen = []
            handle = clf.register_forward_hook(lambda m, args, out: seen.append(args[0]))
            model.decode(img)
            handle.remove()
            proj = clf.proj
            _, static = ops.context_aware_classifier(
                seen[0],
                clf.conv_seg.weight,
                clf.conv_seg.bias,
                proj[0].weight,
                proj[2].weight,
                proj[2].bias,
                scale=clf.scale,
            )
            probs = static.softmax(1)
    return torch.nn.functional.interpolate(probs, size=SIZE, mode="bilinear", align_corners=False)[
        0
    ]


def test_save_figures_three_arms(models, tmp_path):
    for model in models.values():
        model.train()  # save_figures evaluates in eval mode and puts the mode back
    val_set = TinyValSet()
    paths = save_figures(models, IOUS, val_set, tmp_path, 2, "cpu")
    assert paths == [tmp_path / "predictions.png", tmp_path / "masks.png"]
    assert all(model.training for model in models.values())
    for model in models.values():
        model.eval()
    H, W = SIZE

    # predictions.png: image | ground truth | plain | CondNet | CAC, one row per image.
    figure = np.asarray(Image.open(paths[0]).convert("RGB"))
    for index in range(2):
        sample = val_set[index]
        image = np.asarray(image_of(sample))
        label = sample["gt_semantic_seg"].numpy()
        truth = np.asarray(
            Image.fromarray(np.array(CLASS_PALETTE, np.uint8)[np.clip(label, 0, 2)])
        ).copy()
        truth[label == 255] = image[label == 255]
        y, x = locate(figure, truth)
        assert locate(figure, image) == (y, x - W - 4)
        for column, arm in enumerate(("plain", "condnet", "cac"), 1):
            with torch.no_grad():
                pred = models[arm].predict(sample["img"][None]).argmax(1)[0].numpy()
            panel = figure[y : y + H, x + column * (W + 4) : x + column * (W + 4) + W]
            assert np.array_equal(panel, np.array(CLASS_PALETTE, np.uint8)[pred]), arm
    two = save_figures(
        {"plain": models["plain"], "condnet": models["condnet"]},
        IOUS,
        val_set,
        tmp_path / "two",
        2,
        "cpu",
    )
    narrower = np.asarray(Image.open(two[0]))
    assert narrower.shape[0] == figure.shape[0]
    assert figure.shape[1] - narrower.shape[1] == W + 4  # one more column

    # masks.png: per image, a titled block per conditional arm, in models' order.
    masks = np.asarray(Image.open(paths[1]).convert("RGB"))
    blocks = [(0, "condnet"), (0, "cac"), (1, "condnet"), (1, "cac")]
    block_h, rest = divmod(masks.shape[0] - 3 * 4, 4)
    assert rest == 0
    grids = []
    for i, (index, arm) in enumerate(blocks):
        sample = val_set[index]
        present = [0, 1, 2] if index == 0 else [0, 1]
        ious = [IOUS[arm][name] / 100 for name in CLASS_NAMES]
        grid = guidance_grid(
            np.asarray(image_of(sample)),
            expected_masks(models[arm], arm, sample),
            present,
            CLASS_NAMES,
            CLASS_PALETTE,
            columns=len(present) + 1,
            ious=ious,
            image_title=f"image {index}",
        )
        assert grid.shape[0] == H  # one row of tiles
        strip = block_h - H
        top = i * (block_h + 4)
        assert strip > 10 and (masks[top : top + strip] < 100).any(), "no title over the block"
        region = masks[top + strip : top + block_h, : grid.shape[1]]
        assert np.abs(region.astype(int) - grid).max() <= 1, (index, arm)
        grids.append(region)
    assert not np.array_equal(grids[0], grids[1])  # the arms' masks differ
    assert masks.shape[1] == 4 * (W + 2) - 2  # image 0 has three classes


def test_mask_titles_name_the_arms():
    assert MASK_TITLES["condnet"].startswith("CondNet: guidance")
    assert MASK_TITLES["cac"].startswith("CAC: static logits' softmax")
    assert ARM_TITLES == {"plain": "plain classifier", "condnet": "CondNet", "cac": "CAC"}


def test_class_masks_are_distributions(models):
    img = TinyValSet()[0]["img"][None]
    for arm in ("condnet", "cac"):
        probs = class_masks(models[arm].eval(), arm, img)
        assert probs.shape == (1, 3, 10, 12)  # DeepLabV3+ decodes at stride 4
        assert torch.allclose(probs.sum(1), torch.ones(1, 10, 12))
    with pytest.raises(ValueError, match="conditional arms"):
        class_masks(models["plain"], "plain", img)


def test_plain_only_writes_no_masks(models, tmp_path):
    paths = save_figures({"plain": models["plain"]}, {}, TinyValSet(), tmp_path, 1, "cpu")
    assert paths == [tmp_path / "predictions.png"]
    assert not (tmp_path / "masks.png").exists()
    figure = np.asarray(Image.open(paths[0]))
    assert figure.shape[1] >= 3 * SIZE[1] + 2 * 4


def test_cac_only_masks_block_per_image(models, tmp_path):
    paths = save_figures(
        {"cac": models["cac"]}, {"cac": IOUS["cac"]}, TinyValSet(), tmp_path, 5, "cpu"
    )
    masks = np.asarray(Image.open(paths[1]))
    one = save_figures({"cac": models["cac"]}, IOUS, TinyValSet(), tmp_path / "one", 1, "cpu")
    block = np.asarray(Image.open(one[1]))
    # count 5 on a set of 3: three blocks, the first the same as with count 1.
    assert masks.shape[0] == 3 * block.shape[0] + 2 * 4
    assert np.array_equal(masks[: block.shape[0], : block.shape[1]], block)


BAD_SAVES = {
    "no models": (dict(models={}), "models must be a non-empty dict"),
    "unknown arm": (dict(models={"fancy": "plain"}), r"unknown arms \['fancy'\]"),
    "no ious for CondNet": (dict(ious={"cac": IOUS["cac"]}), "no entry for the 'condnet' arm"),
    "missing class IoU": (
        dict(ious={**IOUS, "cac": {"sky": 1.0}}),
        r"ious\['cac'\] has no IoU for the classes \['road', 'car'\]",
    ),
    "unknown ious arm": (dict(ious={**IOUS, "other": {}}), r"ious has unknown arms \['other'\]"),
    "count zero": (dict(count=0), "count must be a positive int"),
    "plain model as CondNet": (dict(models={"condnet": "plain"}), "no guide logits"),
    "plain model as CAC": (dict(models={"cac": "plain"}), "one ContextAwareClassifier"),
}


@pytest.mark.parametrize("case", BAD_SAVES, ids=list(BAD_SAVES))
def test_save_figures_errors(case, models, tmp_path):
    changes, match = BAD_SAVES[case]
    if "models" in changes:
        changes["models"] = {arm: models[kind] for arm, kind in changes["models"].items()}
    kwargs = {
        **dict(models=models, ious=IOUS, val_set=TinyValSet(), work_dir=tmp_path, count=1),
        **changes,
    }
    with pytest.raises(ValueError, match=match):
        save_figures(device="cpu", **kwargs)
    assert not (tmp_path / "predictions.png").exists()


# The learning curves.


def plot_box(figure, x0, x1):
    """(left, top, right, bottom) of the black frame of the axes between columns x0, x1."""
    black = (figure[:, x0:x1] == 0).all(axis=2)
    rows = np.flatnonzero(black.sum(axis=1) > (x1 - x0) // 2)
    assert len(rows) == 2, rows
    top, bottom = rows
    cols = np.flatnonzero(black[top:bottom].sum(axis=0) > (bottom - top) // 2)
    assert len(cols) == 2, cols
    return x0 + cols[0], top, x0 + cols[1], bottom


def pixel_of(box, point, x_range=(0, 200), y_range=(20, 80)):
    left, top, right, bottom = box
    u = (point[0] - x_range[0]) / (x_range[1] - x_range[0])
    v = (point[1] - y_range[0]) / (y_range[1] - y_range[0])
    return round(left + u * (right - left)), round(bottom - v * (bottom - top))


def near(figure, xy, colour, radius=1):
    x, y = xy
    return has_colour(figure[y - radius : y + radius + 1, x - radius : x + radius + 1], colour)


def band_colour(arm):
    return np.rint(255 * (1 - 0.22) + np.array(ARM_COLOURS[arm]) * 0.22)


# Two seeds 20 mIoU apart; their mean is 30, 50, 70 at iterations 0, 100, 200.
LOW = [(0, 20.0), (100, 40.0), (200, 60.0)]
HIGH = [(0, 40.0), (100, 60.0), (200, 80.0)]
MEAN = [(0, 30.0), (100, 50.0), (200, 70.0)]


def test_curves_mean_line_and_band_where_the_values_are():
    panels = {"cue scenes": {"condnet": [LOW, HIGH]}, "control scenes": {"condnet": [MEAN]}}
    figure = learning_curves_figure(panels, "mIoU over training")
    assert figure.shape == (380, 900, 3) and figure.dtype == np.uint8
    blue = ARM_COLOURS["condnet"]
    # The axes: the data's range widened to round steps, iterations 0-200 (step
    # 50) and mIoU 20-80 (step 20, as the values run from 20 to 80).
    for x0 in (0, 450):
        box = plot_box(figure, x0, x0 + 450)
        assert box[0] > x0 + 30 and box[2] < x0 + 450 and box[1] > 60
        for point in [*MEAN, (50, 40.0), (150, 60.0)]:
            assert near(figure, pixel_of(box, point), blue), (x0, point)
        # Off the line (mean 55 at iteration 125; no gridline at x 125 or mIoU 50, 60):
        # the band of the two seeds' 45-65 in the left panel, white without it.
        inside, outside = pixel_of(box, (125, 50.0)), pixel_of(box, (125, 68.0))
        x, y = inside
        if x0 == 0:
            assert np.abs(figure[y, x] - band_colour("condnet")).max() <= 1
        else:
            assert (figure[y, x] == 255).all()
        assert (figure[outside[1], outside[0]] == 255).all()
        assert not near(figure, pixel_of(box, (125, 50.0)), blue, radius=3)
    # No band on the right (one seed): no band colour there at all.
    band = (np.abs(figure.astype(int) - band_colour("condnet")) <= 1).all(axis=2)
    assert band[:, :450].sum() > 1000 and band[:, 450:].sum() == 0
    # The legend (above the plots) shows CondNet's colour only.
    left, top, right, bottom = plot_box(figure, 0, 450)
    assert has_colour(figure[:top], blue)
    assert not has_colour(figure, ARM_COLOURS["cac"])
    # (The plain arm's dark grey is one of the text's anti-aliasing greys: looked
    # for inside the axes, where there is no text.)
    assert not has_colour(figure[top:bottom, left:right], ARM_COLOURS["plain"])


def test_curves_one_colour_per_arm():
    flat = {
        "plain": [[(0, 20.0), (200, 20.0)]],
        "condnet": [[(0, 50.0), (200, 50.0)]],
        "cac": [[(0, 80.0), (200, 80.0)]],
    }
    figure = learning_curves_figure({"scenes": flat}, "three arms", panel_size=(500, 300))
    assert figure.shape == (300, 500, 3)
    box = plot_box(figure, 0, 500)
    for arm, (value,) in (("plain", (20.0,)), ("condnet", (50.0,)), ("cac", (80.0,))):
        for it in (30, 170):
            assert near(figure, pixel_of(box, (it, value)), ARM_COLOURS[arm]), arm
        assert has_colour(figure[: box[1]], ARM_COLOURS[arm])  # in the legend
    # Distinct colours: grey/black, blue, orange.
    plain, condnet, cac = (np.array(ARM_COLOURS[a]) for a in ("plain", "condnet", "cac"))
    assert plain.max() - plain.min() < 10 and condnet[2] > condnet[0] and cac[0] > cac[2]


def test_save_learning_curves(tmp_path):
    panels = {"cue scenes": {"plain": [MEAN], "cac": [LOW, HIGH]}}
    path = save_learning_curves(panels, "title", tmp_path / "curves" / "c.png")
    assert path == tmp_path / "curves" / "c.png"
    assert np.array_equal(np.asarray(Image.open(path)), learning_curves_figure(panels, "title"))


BAD_CURVES = {
    "no panels": ({}, "panels must be a non-empty dict"),
    "no arms": ({"a": {}}, r"panels\['a'\] must be a non-empty dict"),
    "unknown arm": ({"a": {"fancy": [MEAN]}}, r"unknown arms \['fancy'\]"),
    "no curves": ({"a": {"cac": []}}, r"panels\['a'\]\['cac'\] holds no curves"),
    "empty curve": ({"a": {"cac": [MEAN, []]}}, r"\['cac'\]\[1\] must be a non-empty list"),
    "mismatched iterations": (
        {"a": {"cac": [MEAN, [(0, 1.0), (100, 2.0), (250, 3.0)]]}},
        r"\['cac'\]\[1\] has iterations \[0.0, 100.0, 250.0\]; curve 0 has",
    ),
    "fewer points": ({"a": {"cac": [MEAN, MEAN[:2]]}}, "has iterations"),
    "decreasing iterations": ({"a": {"cac": [MEAN[::-1]]}}, "non-decreasing iterations"),
    "not a pair": ({"a": {"cac": [[(0, 1.0, 2.0)]]}}, r"\[0\]\[0\] must be an \(iteration"),
    "fraction over 100": ({"a": {"cac": [[(0, 120.0)]]}}, r"percentage in \[0, 100\]"),
    "nan": ({"a": {"cac": [[(0, float("nan"))]]}}, r"percentage in \[0, 100\]"),
}


@pytest.mark.parametrize("case", BAD_CURVES, ids=list(BAD_CURVES))
def test_learning_curves_errors(case):
    panels, match = BAD_CURVES[case]
    with pytest.raises(ValueError, match=match):
        learning_curves_figure(panels, "title")
