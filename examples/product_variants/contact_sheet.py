"""A contact sheet: images in a labelled grid, scaled up with nearest-neighbour so small outputs stay sharp."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

PAD = 8
LINE_PX = 14
BACKGROUND = (246, 245, 242)
INK = (34, 37, 42)
MUTED = (107, 111, 118)


@dataclass
class Tile:
    image: Image.Image
    title: str
    note: str = ""  # a second, muted line (seed, cache...)


def overlay(image: Image.Image, mask: Image.Image, color: tuple[int, int, int] = (255, 56, 96)) -> Image.Image:
    """``image`` tinted where the OpenAI-style ``mask`` is transparent (the area to repaint)."""
    repaint = mask.convert("RGBA").getchannel("A").point(lambda a: 140 if a < 128 else 0)
    tint = Image.new("RGBA", image.size, (*color, 255))
    tint.putalpha(repaint)
    return Image.alpha_composite(image.convert("RGBA"), tint).convert("RGB")


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def contact_sheet(tiles: list[Tile], *, columns: int = 4, cell: int = 192) -> Image.Image:
    """Tiles left to right, top to bottom; each image scaled to fit ``cell`` pixels, with two caption lines."""
    if not tiles:
        raise ValueError("a contact sheet needs at least one image")
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    caption = 2 * LINE_PX + 4
    sheet = Image.new("RGB", (PAD + columns * (cell + PAD), PAD + rows * (cell + caption + PAD)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, tile in enumerate(tiles):
        x = PAD + (index % columns) * (cell + PAD)
        y = PAD + (index // columns) * (cell + caption + PAD)
        scale = max(1, cell // max(tile.image.size))
        image = tile.image.convert("RGB").resize(
            (tile.image.width * scale, tile.image.height * scale), Image.Resampling.NEAREST
        )
        sheet.paste(image, (x + (cell - image.width) // 2, y + (cell - image.height) // 2))
        draw.text((x, y + cell + 2), _fit(draw, tile.title, font, cell), fill=INK, font=font)
        draw.text((x, y + cell + 2 + LINE_PX), _fit(draw, tile.note, font, cell), fill=MUTED, font=font)
    return sheet
