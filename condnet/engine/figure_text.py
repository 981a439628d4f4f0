"""Text on figures: PIL's built-in font (``ImageFont.load_default``; no font file is
read) sized from the panel width, about 15 px for 192-pixel panels; measuring,
shortening and labelling with it. Shared by the guidance grid
(:mod:`condnet.engine.visualize`) and the demo's figures (:mod:`condnet.demo.figures`).
"""

from __future__ import annotations

import functools

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "auto_font_size",
    "check_font_size",
    "draw_label",
    "fit_text",
    "font_of_size",
    "line_metrics",
    "text_box",
]


def check_font_size(font_size: object) -> None:
    """Raise unless ``font_size`` is None (sized from the panels) or a positive int."""
    if font_size is not None and (
        isinstance(font_size, bool) or not isinstance(font_size, int) or font_size < 1
    ):
        raise ValueError(f"font_size must be a positive int or None; got {font_size!r}")


def auto_font_size(width: int) -> int:
    """Text height for panels ``width`` pixels wide: 10 px (PIL's default) for small
    tiles, ~15 px at 192 px, at most 24 px."""
    return max(10, min(24, round(width / 13)))


@functools.lru_cache(maxsize=16)
def font_of_size(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in font at ``size`` px; PIL's fixed bitmap font where the scalable
    one is unavailable (Pillow < 10.1 or built without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def text_box(font, text: str) -> tuple[int, int, int]:
    """(width, top offset, bottom) of ``text`` drawn at (0, 0) in ``font``."""
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(
        (0, 0), text, font=font
    )
    return int(right - left), int(top), int(bottom)


def line_metrics(font) -> tuple[int, int]:
    """(height, top offset) of a line of text in ``font``, ascender to descender: every
    line is drawn at ``y - top`` so that words share a baseline whatever their letters."""
    _, top, bottom = text_box(font, "Ag|IoU")
    return bottom - top, top


def fit_text(font, text: str, width: int) -> str:
    """``text``, shortened with "..." to at most ``width`` pixels."""
    if text_box(font, text)[0] <= width:
        return text
    while text and text_box(font, text + "...")[0] > width:
        text = text[:-1]
    return text + "..."


def draw_label(
    tile: Image.Image, text: str, swatch: tuple[int, int, int] | None, font=None
) -> None:
    """Write ``text`` at the top-left on a black box, after a colour swatch if given."""
    draw = ImageDraw.Draw(tile)
    x0 = 2
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    height = int(bottom - top)
    width = int(right - left) + (height + 3 if swatch is not None else 0)
    draw.rectangle((0, 0, x0 + width + 2, height + 4), fill=(0, 0, 0))
    if swatch is not None:
        draw.rectangle((x0, 2, x0 + height, 2 + height), fill=swatch, outline=(255, 255, 255))
        x0 += height + 3
    draw.text((x0, 2 - top), text, fill=(255, 255, 255), font=font)
