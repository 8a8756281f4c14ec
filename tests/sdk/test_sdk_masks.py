"""Mask and outpaint helpers: transparent = repaint, PNG bytes out."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from huabu.sdk import masks


def _alpha(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "RGBA"
    return image.getchannel("A")


def test_rectangle_and_ellipse() -> None:
    alpha = _alpha(masks.rectangle((16, 8), (2, 1, 6, 4)))
    assert alpha.size == (16, 8)
    assert alpha.getpixel((2, 1)) == 0 and alpha.getpixel((5, 3)) == 0  # inside: repaint
    assert alpha.getpixel((6, 4)) == 255 and alpha.getpixel((0, 0)) == 255  # right/bottom exclusive
    ell = _alpha(masks.ellipse((20, 20), (0, 0, 20, 20)))
    assert ell.getpixel((10, 10)) == 0 and ell.getpixel((0, 0)) == 255
    soft = _alpha(masks.rectangle((32, 32), (8, 8, 24, 24), feather=3))
    edge = soft.getpixel((8, 16))
    assert isinstance(edge, int) and 0 < edge < 255


def test_size_from_an_image_and_box_checks() -> None:
    image = Image.new("RGB", (12, 10))
    assert _alpha(masks.rectangle(image, (0, 0, 4, 4))).size == (12, 10)
    assert masks.image_size(image) == (12, 10)
    with pytest.raises(ValueError, match="left < right"):
        masks.rectangle((8, 8), (4, 0, 2, 4))
    with pytest.raises(ValueError, match="outside"):
        masks.rectangle((8, 8), (9, 9, 12, 12))


def test_from_alpha_black_white_and_invert() -> None:
    erased = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    erased.putpixel((1, 1), (0, 0, 0, 0))
    alpha = _alpha(masks.from_alpha(erased))
    assert alpha.getpixel((1, 1)) == 0 and alpha.getpixel((2, 2)) == 255
    with pytest.raises(ValueError, match="alpha"):
        masks.from_alpha(Image.new("RGB", (4, 4)))
    bw = Image.new("L", (4, 4), 0)
    bw.putpixel((3, 3), 255)
    assert _alpha(masks.from_black_white(bw)).getpixel((3, 3)) == 0
    assert _alpha(masks.from_black_white(bw, repaint="black")).getpixel((3, 3)) == 255
    inverted = _alpha(masks.invert(masks.from_alpha(erased)))
    assert inverted.getpixel((1, 1)) == 255 and inverted.getpixel((2, 2)) == 0


def test_accepts_paths_and_bytes(tmp_path) -> None:
    path = tmp_path / "x.png"
    Image.new("RGBA", (6, 6), (0, 0, 0, 0)).save(path)
    assert _alpha(masks.from_alpha(path)).getpixel((0, 0)) == 0
    assert _alpha(masks.from_alpha(path.read_bytes())).size == (6, 6)
    assert masks.image_size(str(path)) == (6, 6)


def test_extents() -> None:
    assert masks.extend("right", 64) == masks.Extents(right=64)
    assert masks.extend("up", 8) == masks.Extents(top=8)
    assert masks.extend("all", 4).as_kwargs() == {"left": 4, "right": 4, "top": 4, "bottom": 4}
    assert masks.extend("left", 2) + masks.extend("vertical", 3) == masks.Extents(2, 0, 3, 3)
    assert masks.Extents(1, 2, 3, 4).output_size((10, 10)) == (13, 17)
    with pytest.raises(ValueError):
        masks.extend("sideways", 4)
    with pytest.raises(ValueError):
        masks.extend("left", 0)


def test_to_size_and_aspect() -> None:
    assert masks.to_size((32, 32), (64, 48)) == masks.Extents(16, 16, 8, 8)
    assert masks.to_size((32, 32), (64, 32), anchor="left") == masks.Extents(0, 32, 0, 0)
    assert masks.to_size((32, 32), (48, 48), anchor="bottom-right") == masks.Extents(16, 0, 16, 0)
    with pytest.raises(ValueError, match="smaller"):
        masks.to_size((32, 32), (16, 32))
    wide = masks.to_aspect((64, 48), "16:9", multiple=8)
    assert wide.output_size((64, 48)) == (88, 48)
    tall = masks.to_aspect((32, 32), 0.5)
    assert tall.output_size((32, 32)) == (32, 64)


def test_outpaint_mask_and_pad() -> None:
    ext = masks.Extents(left=4, top=2)
    alpha = _alpha(masks.outpaint_mask((8, 8), ext))
    assert alpha.size == (12, 10)
    assert alpha.getpixel((0, 0)) == 0 and alpha.getpixel((4, 2)) == 255 and alpha.getpixel((11, 9)) == 255
    canvas = Image.open(io.BytesIO(masks.pad(Image.new("RGB", (8, 8), (9, 9, 9)), ext)))
    assert (
        canvas.size == (12, 10)
        and canvas.getpixel((0, 0)) == (0, 0, 0, 0)
        and canvas.getpixel((4, 2)) == (9, 9, 9, 255)
    )
    assert _alpha(masks.from_alpha(canvas)).getpixel((0, 0)) == 0  # pad + from_alpha = outpaint via edit
