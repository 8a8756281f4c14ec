"""The PNG encoder: files any decoder reads back to the same pixels, the same bytes on every
machine, and compression on a par with Pillow's at the served level."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from huabu.deployments.backends.mmdit.png import (
    PNG_SIGNATURE,
    SLICE_BYTES,
    encode_png,
    filtered_rows,
    read_png_parameters,
    zlib_stream,
)


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Gradients with a little noise: closer to a generated image than uniform noise."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 0.7) % 256, (y * 0.5) % 256, ((x + y) * 0.3) % 256], -1)
    noise = np.random.default_rng(seed).normal(0, 4, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of each chunk, after checking the signature and every CRC."""
    assert data.startswith(PNG_SIGNATURE)
    out, at = [], len(PNG_SIGNATURE)
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        out.append((kind, body))
        at += 12 + length
    return out


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (300, 1031)])
def test_png_round_trips_pixels_and_parameters(size: tuple[int, int]) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    data = encode_png(pixels, {"prompt": "红色圆形 on the left", "seed": 7, "negative_prompt": None})
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (size[1], size[0])
        assert np.array_equal(np.asarray(image), pixels)
    assert read_png_parameters(data) == {"prompt": "红色圆形 on the left", "seed": "7", "negative_prompt": ""}


def test_png_is_one_valid_zlib_stream_of_filtered_rows() -> None:
    pixels = smooth_image(300, 1031)  # ~930 KB filtered: several slices
    assert pixels.shape[0] * (1 + 3 * pixels.shape[1]) > 3 * SLICE_BYTES
    found = chunks(encode_png(pixels, {"seed": 1}))
    assert [kind for kind, _ in found] == [b"IHDR", b"iTXt", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", found[0][1]) == (1031, 300, 8, 2, 0, 0, 0)
    # zlib.decompress checks the header, that the last block is final and the Adler-32 of it all.
    assert zlib.decompress(found[2][1]) == filtered_rows(pixels).tobytes()


def test_each_row_gets_the_filter_that_leaves_the_smallest_bytes() -> None:
    stripes = np.zeros((4, 16, 3), np.uint8)
    stripes[:, :, 0] = np.arange(16) * 9  # a horizontal ramp: each pixel minus its left neighbour is constant
    rows = filtered_rows(stripes)
    assert list(rows[:, 0]) == [1, 2, 2, 2]  # Sub for the first row, then Up (equal to the row above)
    assert not rows[1:, 1:].any()
    assert filtered_rows(np.zeros((2, 4, 3), np.uint8))[:, 0].tolist() == [0, 0]  # ties go to None
    noise = np.random.default_rng(2).integers(0, 256, (90, 1024, 3), np.uint8)
    mixed = np.concatenate([smooth_image(90, 1024), noise])
    assert len(mixed) * (1 + 3 * 1024) > 2 * SLICE_BYTES  # several bands of rows
    with ThreadPoolExecutor(4) as pool:
        banded = filtered_rows(mixed, pool)
    assert np.array_equal(banded, filtered_rows(mixed))
    with Image.open(io.BytesIO(encode_png(mixed, {}))) as image:
        assert np.array_equal(np.asarray(image), mixed)


def test_png_bytes_do_not_depend_on_the_threads() -> None:
    data = filtered_rows(smooth_image(200, 1024))
    alone = zlib_stream(data, 1)
    with ThreadPoolExecutor(3) as pool:
        assert zlib_stream(data, 1, pool) == alone
    assert encode_png(smooth_image(64, 64), {"seed": 1}) == encode_png(smooth_image(64, 64), {"seed": 1})


def test_png_compresses_like_pillow_at_the_served_level() -> None:
    pixels = smooth_image(512, 512)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("seed", "1")
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", pnginfo=info, compress_level=1)
    ours = encode_png(pixels, {"seed": 1}, 1)
    assert len(ours) <= 1.05 * len(buffer.getvalue()), (len(ours), len(buffer.getvalue()))
    assert len(ours) < 0.8 * pixels.nbytes  # compressed, not stored
    assert len(encode_png(pixels, {"seed": 1}, 9)) < len(ours) < len(encode_png(pixels, {"seed": 1}, 0))


def test_png_rejects_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32), {})
    with pytest.raises(ValueError, match="H, W, 3"):
        encode_png(np.zeros((4, 4), np.uint8), {})
    with pytest.raises(ValueError, match="keyword"):
        encode_png(np.zeros((4, 4, 3), np.uint8), {"k" * 80: "v"})


def test_a_batch_encoded_at_once_gives_each_image_its_own_bytes() -> None:
    # The model replica encodes a batch's images from several threads, which share the encoder's pool.
    images = [smooth_image(200, 1024, seed) for seed in range(6)]
    expected = [encode_png(image, {"seed": i}) for i, image in enumerate(images)]
    with ThreadPoolExecutor(6) as callers:
        assert list(callers.map(lambda i: encode_png(images[i], {"seed": i}), range(6))) == expected
