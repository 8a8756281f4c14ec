"""PNG encoding with the generation parameters in text chunks, as established image tools do.

The encoder writes the file itself rather than through Pillow, whose encoder runs on one thread
(docs/ARCHITECTURE.md has the measurements; bench/bench_png.py compares the two). Here each row gets PNG's
None, Sub or Up filter, whichever leaves the smallest bytes (libpng's heuristic), in numpy over
bands of rows; then the filtered bytes are deflated in fixed slices, each primed with the 32 KiB
before it and ended on a byte boundary as pigz does, so the slices join into one ordinary zlib
stream that any decoder reads. Bands and slices run on a small thread pool (numpy and zlib
release the GIL). They are fixed sizes, not one per thread, so the bytes are the same on every
machine.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SLICE_BYTES = 256 * 1024  # ~85 rows of a 1024-wide image: 12 slices for 1024x1024
WINDOW_BYTES = 32 * 1024  # deflate's window: a slice primed with this much loses almost no ratio
MAX_THREADS = 8
T = TypeVar("T")
NONE, SUB, UP = 0, 1, 2  # PNG filter types (Average and Paeth made no smaller files here)
# zlib header: deflate, 32 KiB window, no preset dictionary (FLEVEL only advises; any level is valid).
_ZLIB_HEADER = b"\x78\x01"

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()  # a batch's images are encoded from several threads at once


def encoder_threads() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(MAX_THREADS, cores)


def _shared_pool() -> ThreadPoolExecutor | None:
    """One pool per process, made on first use; None where one core is all there is."""
    global _pool
    with _pool_lock:
        if _pool is None and (threads := encoder_threads()) > 1:
            _pool = ThreadPoolExecutor(threads, thread_name_prefix="png")
        return _pool


def encode_png(pixels: np.ndarray, parameters: Mapping[str, object], compress_level: int = 1) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes; deterministic for the same pixels, parameters and level."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8 or 0 in pixels.shape:
        raise ValueError(f"expected (H, W, 3) uint8 pixels, got {pixels.shape} {pixels.dtype}")
    height, width, _ = pixels.shape
    # 8-bit RGB, deflate, adaptive filtering (per-row filter bytes), no interlace.
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    text = [png_chunk(b"iTXt", itxt(key, value)) for key, value in parameters.items()]
    pool = _shared_pool()
    image_data = zlib_stream(filtered_rows(pixels, pool), compress_level, pool)
    return b"".join(
        [PNG_SIGNATURE, png_chunk(b"IHDR", header), *text, png_chunk(b"IDAT", image_data), png_chunk(b"IEND", b"")]
    )


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def itxt(key: str, value: object) -> bytes:
    """An uncompressed iTXt chunk's body: iTXt keeps Chinese prompts intact (tEXt is Latin-1 only)."""
    keyword = key.encode("latin-1")
    if not 1 <= len(keyword) <= 79:
        raise ValueError(f"PNG text keyword must be 1 to 79 Latin-1 characters, got {key!r}")
    text = "" if value is None else str(value)
    # keyword, NUL, compression flag 0, method 0, empty language tag, NUL, empty translated keyword, NUL
    return keyword + b"\x00\x00\x00\x00\x00" + text.encode("utf-8")


def filtered_rows(pixels: np.ndarray, pool: ThreadPoolExecutor | None = None) -> np.ndarray:
    """(H, 1 + 3W) uint8: each row's filter type, then the row filtered by it."""
    height, width, _ = pixels.shape
    rows = np.ascontiguousarray(pixels).reshape(height, 3 * width)
    out = np.empty((height, 1 + 3 * width), np.uint8)
    band = max(1, SLICE_BYTES // out.shape[1])
    _map(pool, lambda start: _filter_band(rows, out, start, min(start + band, height)), range(0, height, band))
    return out


def _filter_band(rows: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
    current = rows[start:stop]
    above = np.empty_like(current)  # the row above the first is zeros
    above[0] = rows[start - 1] if start else 0
    above[1:] = current[:-1]
    up = current - above  # uint8 wraps mod 256, as PNG's filters do
    sub = current.copy()
    np.subtract(current[:, 3:], current[:, :-3], out=sub[:, 3:])  # minus the pixel to the left
    # Sum of each byte's distance from zero read as a signed byte: the smaller, the better it deflates.
    costs = np.stack([np.minimum(f, 0 - f).sum(axis=1, dtype=np.uint32) for f in (current, sub, up)])
    choice = costs.argmin(axis=0).astype(np.uint8)
    out[start:stop, 0] = choice
    target = out[start:stop, 1:]
    target[...] = up
    for kind, filtered in ((SUB, sub), (NONE, current)):
        rows_of_kind = choice == kind
        target[rows_of_kind] = filtered[rows_of_kind]


def zlib_stream(data: np.ndarray, level: int, pool: ThreadPoolExecutor | None = None) -> bytes:
    """One zlib stream of ``data``'s bytes, deflated in SLICE_BYTES slices (on ``pool``'s threads if given)."""
    view = np.ascontiguousarray(data).reshape(-1).view(np.uint8).data
    size = len(view)
    starts = range(0, size, SLICE_BYTES)

    def deflate(start: int) -> bytes:
        end = min(start + SLICE_BYTES, size)
        # Raw deflate; the preset dictionary is the data just before, which the decoder has already.
        window = bytes(view[max(0, start - WINDOW_BYTES) : start])  # empty for the first slice
        compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=window)
        # Every slice but the last ends on a byte boundary without the final-block bit.
        return compressor.compress(view[start:end]) + compressor.flush(
            zlib.Z_FINISH if end == size else zlib.Z_SYNC_FLUSH
        )

    pieces = _map(pool, deflate, starts)
    return b"".join([_ZLIB_HEADER, *pieces, struct.pack(">I", zlib.adler32(view))])


def _map(pool: ThreadPoolExecutor | None, work: Callable[[int], T], items: range) -> list[T]:
    if pool is None or len(items) < 2:
        return [work(item) for item in items]
    return list(pool.map(work, items))


def read_png_parameters(data: bytes) -> dict[str, str]:
    with Image.open(io.BytesIO(data)) as image:
        return {str(k): str(v) for k, v in image.text.items()}  # type: ignore[attr-defined]
