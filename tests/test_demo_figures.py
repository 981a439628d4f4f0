"""The demo's titled figures (condnet.demo.figures): predictions_figure (column titles
and a class legend) and present_classes."""

import numpy as np
import pytest
import torch

from condnet.demo.figures import predictions_figure, present_classes

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
