"""Prompt adherence judged from the image alone, by image analysis (never by the model).

Pixels are labelled by colour (hue for chromatic pixels, lightness for white and black: a hue
survives blurring into the grey backgrounds), each expected object is matched to the largest
blob of its colour, and the shape that best fits the blob's outline gives its shape, position
and size.
``parse_prompt`` reads the synthetic caption language (English, Chinese, mixed) back into a
``SceneSpec``, so ``score(image, prompt)`` can score any generated image from its prompt alone;
prompts outside that language are unscorable (None).

Also here: an outpainting seam metric and an inpainting check.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from huabu.deployments.backends.mmdit.training import grammar
from huabu.deployments.backends.mmdit.training.synthetic import (
    ANCHORS,
    BACKGROUNDS,
    CENTROID_OFFSET,
    COLORS,
    EN_BACKGROUND,
    EN_POSITION_SHORT,
    EN_SIZE,
    HIDDEN_ON,
    SHAPE_AREA,
    SHAPES,
    SIZE_FRACTION,
    ZH_BACKGROUND,
    ZH_COLOR,
    ZH_POSITION,
    ZH_SHAPE,
    ZH_SIZE,
    InpaintCase,
    ObjectSpec,
    SceneSpec,
    shape_coverage,
)

# --------------------------------------------------------------------------------------------
# Pixel colour labels

BACKGROUND_LABEL = -1
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
_HUED = [c for c in COLOR_NAMES if c not in ("white", "black")]
_HUE_CENTERS = np.array(
    [np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360 for r, g, b in (COLORS[c] for c in _HUED)]
)
_HUE_LABELS = np.array([COLOR_NAMES.index(c) for c in _HUED])
MIN_CHROMA = 40.0  # max - min channel: below it a pixel is grey, white or black
BLACK_BELOW = 50.0  # mean channel value of a grey pixel below which it is "black"
WHITE_ABOVE = 220.0  # ... above which it is "white" (the backgrounds' greys sit between)


def color_labels(image: np.ndarray) -> np.ndarray:
    """int8 (H, W): index into ``COLOR_NAMES`` per pixel, or ``BACKGROUND_LABEL`` (grey or unclear)."""
    rgb = np.asarray(image, dtype=np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    chroma = rgb.max(axis=-1) - rgb.min(axis=-1)
    hue = np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360  # (H, W), 0 = red
    gap = np.abs(hue[..., None] - _HUE_CENTERS)
    nearest = _HUE_LABELS[np.argmin(np.minimum(gap, 360 - gap), axis=-1)]
    lightness = rgb.mean(axis=-1)
    grey = np.where(lightness < BLACK_BELOW, COLOR_NAMES.index("black"), BACKGROUND_LABEL)
    grey = np.where(lightness > WHITE_ABOVE, COLOR_NAMES.index("white"), grey)
    return np.where(chroma >= MIN_CHROMA, nearest, grey).astype(np.int8)


def _padded(x: np.ndarray, fill: int | bool) -> np.ndarray:
    """``x`` with a one-pixel border of ``fill`` (np.pad is slow on tiny arrays)."""
    out = np.full((x.shape[0] + 2, x.shape[1] + 2), fill, dtype=x.dtype)
    out[1:-1, 1:-1] = x
    return out


def components(mask: np.ndarray) -> np.ndarray:
    """8-connected component ids (H, W) of a bool mask; 0 outside it. Vectorised label propagation:
    every pixel takes its neighbourhood's minimum id until nothing changes (no scipy needed)."""
    h, w = mask.shape
    none = h * w + 1
    ids = np.where(mask, np.arange(1, h * w + 1).reshape(h, w), none)
    while True:
        padded = _padded(ids, none)
        low = ids
        for dy, dx in itertools.product(range(3), range(3)):
            low = np.minimum(low, padded[dy : dy + h, dx : dx + w])
        low = np.where(mask, low, none)
        if np.array_equal(low, ids):
            return np.where(mask, ids, 0)
        ids = low


# --------------------------------------------------------------------------------------------
# Blobs: position, shape and size of one connected region of a colour

MIN_AREA = 0.012  # of min(H, W)^2: smaller blobs are specks, not objects (a small shape is ~0.04)
LARGE_RADIUS = float(np.sqrt(SIZE_FRACTION["small"] * SIZE_FRACTION["large"]))  # between the two sizes


@dataclass(frozen=True)
class Blob:
    area: int  # pixels labelled with the colour
    center: tuple[float, float]  # (y, x) of the best-fitting shape's centre, fractions of the canvas
    radius: float  # that shape's radius / min(H, W) (small ~0.14, large ~0.22)
    fit: dict[str, float]  # IoU of the blob's soft coverage with each shape of equal area and centroid
    position: str
    shape: str
    size: str


def nearest_position(y: float, x: float) -> str:
    """The position word whose anchor is nearest to (y, x), fractions of the canvas."""
    return min(ANCHORS, key=lambda p: (ANCHORS[p][0] - y) ** 2 + (ANCHORS[p][1] - x) ** 2)


def _grow(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary dilation with a 3x3 square, ``steps`` times."""
    h, w = mask.shape
    out = mask
    for _ in range(steps):
        padded = _padded(out, False)
        out = np.zeros_like(mask)
        for dy, dx in itertools.product(range(3), range(3)):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def coverage(rgb: np.ndarray, component: np.ndarray) -> np.ndarray:
    """Soft coverage (H, W) in [0, 1] of the object whose pixels are ``component``.

    Each pixel near the blob is projected on the line from the local background colour (median of
    a ring around the blob) to the object's own colour (median of its inner pixels): blurred edges
    get fractional coverage, as in the renderer's anti-aliasing, whatever the colour's saturation.
    """
    near = _grow(component, 1)
    ring = _grow(component, 3) & ~near
    background = np.median(rgb[ring if ring.any() else ~component], axis=0)
    inner = component & ~_grow(~component, 1)
    color = np.median(rgb[inner if inner.sum() >= 4 else component], axis=0)
    direction = color - background
    norm = float(direction @ direction)
    if norm < 1.0:
        return component.astype(np.float32)
    soft = np.clip((rgb - background) @ direction / norm, 0.0, 1.0)
    return np.where(near, soft, 0.0).astype(np.float32)


TEMPLATE_BLURS = (0.0, 0.6, 1.0)  # Gaussian sigmas, px: generated images are softer than renders


@functools.lru_cache(maxsize=64)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) Gaussian blur along one axis, zero outside: blur(x) = B_h @ x @ B_w.T."""
    offsets = np.arange(n)[:, None] - np.arange(n)[None, :]
    radius = max(1, int(np.ceil(3 * sigma)))
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2) * (np.abs(offsets) <= radius)
    norm = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).sum()
    return (kernel / norm).astype(np.float32)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W) map, zero outside."""
    if sigma <= 0:
        return x
    return _blur_matrix(x.shape[0], sigma) @ x @ _blur_matrix(x.shape[1], sigma).T


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum() / max(float(np.maximum(a, b).sum()), 1e-6))


def _blob(rgb: np.ndarray, component: np.ndarray) -> Blob:
    """Fit each shape, with the blob's area and centroid, and keep the best by IoU.

    Whole-outline template fits on soft coverage tolerate what bounding-box ratios do not: corners
    rounded by blur, and noisy pixels sticking out of an edge.
    """
    h, w = component.shape
    soft = coverage(rgb, component)
    if soft.sum() < 1.0:  # a colour the projection cannot explain: fall back to the hard mask
        soft = component.astype(np.float32)
    area = float(soft.sum())
    ys, xs = np.indices((h, w), dtype=np.float32)
    cy = float((soft * ys).sum() / area) + 0.5  # pixel centres, as the renderer measures them
    cx = float((soft * xs).sum() / area) + 0.5
    fit: dict[str, float] = {}
    centers: dict[str, tuple[float, float]] = {}
    for shape in SHAPES:
        r = float(np.sqrt(area / SHAPE_AREA[shape]))
        centers[shape] = (cy - CENTROID_OFFSET[shape] * r, r)
        sharp = shape_coverage(shape, centers[shape][0], cx, r, (h, w))
        # A blurred square is still a square: compare with the template blurred as much as the image.
        fit[shape] = max(_iou(_blur(sharp, sigma), soft) for sigma in TEMPLATE_BLURS)
    shape = max(SHAPES, key=lambda s: fit[s])
    y, x, radius = centers[shape][0] / h, cx / w, centers[shape][1] / min(h, w)
    return Blob(
        area=int(component.sum()),
        center=(y, x),
        radius=radius,
        fit=fit,
        position=nearest_position(y, x),
        shape=shape,
        size="large" if radius >= LARGE_RADIUS else "small",
    )


def find_blobs(image: np.ndarray, color: str, limit: int | None = None, labels: np.ndarray | None = None) -> list[Blob]:
    """Blobs of ``color`` at least ``MIN_AREA`` big, largest first."""
    labels = color_labels(image) if labels is None else labels
    h, w = labels.shape
    ids = components(labels == COLOR_NAMES.index(color))
    found, counts = np.unique(ids[ids > 0], return_counts=True)
    keep = [(n, i) for i, n in zip(found, counts, strict=True) if n >= MIN_AREA * min(h, w) ** 2]
    keep.sort(key=lambda t: (-t[0], t[1]))
    rgb = np.asarray(image, dtype=np.float32)
    return [_blob(rgb, ids == i) for _, i in keep[:limit]]


# --------------------------------------------------------------------------------------------
# Scoring against a spec


@dataclass(frozen=True)
class ObjectScore:
    expected: ObjectSpec
    blob: Blob | None  # the blob matched to it; None: its colour is absent
    position: bool
    shape: bool
    size: bool | None  # None: the spec names no size

    @property
    def color(self) -> bool:
        return self.blob is not None

    @property
    def ok(self) -> bool:
        return self.color and self.position and self.shape and self.size is not False

    @property
    def value(self) -> float:
        checks = [self.color, self.position, self.shape] + ([self.size] if self.size is not None else [])
        return sum(checks) / len(checks)


@dataclass(frozen=True)
class AdherenceScore:
    spec: SceneSpec
    objects: tuple[ObjectScore, ...]

    @property
    def color(self) -> bool:
        return all(o.color for o in self.objects)

    @property
    def position(self) -> bool:
        return all(o.position for o in self.objects)

    @property
    def color_position(self) -> bool:
        """Colour and position right for every object (the headline target)."""
        return self.color and self.position

    @property
    def shape(self) -> bool:
        return all(o.shape for o in self.objects)

    @property
    def size(self) -> bool | None:
        checked = [o.size for o in self.objects if o.size is not None]
        return all(checked) if checked else None

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.objects)

    @property
    def value(self) -> float:
        """Mean over objects of the fraction of checked attributes that hold, in [0, 1]."""
        return sum(o.value for o in self.objects) / len(self.objects) if self.objects else 1.0


def _anchor_distance(blob: Blob, obj: ObjectSpec) -> float:
    ay, ax = ANCHORS[obj.position]
    return (blob.center[0] - ay) ** 2 + (blob.center[1] - ax) ** 2


def _judge(obj: ObjectSpec, blob: Blob | None) -> ObjectScore:
    return ObjectScore(
        expected=obj,
        blob=blob,
        position=blob is not None and blob.position == obj.position,
        shape=blob is not None and blob.shape == obj.shape,
        size=None if obj.size is None else (blob is not None and blob.size == obj.size),
    )


def evaluate(image: np.ndarray, spec: SceneSpec) -> AdherenceScore:
    """Score an RGB uint8 image (H, W, 3) against the scene it should show."""
    labels = color_labels(image)
    matched: dict[int, Blob | None] = {}
    for color in dict.fromkeys(o.color for o in spec.objects):
        wanted = [i for i, o in enumerate(spec.objects) if o.color == color]
        blobs = find_blobs(image, color, limit=len(wanted), labels=labels)
        # Objects sharing a colour take the largest blobs, paired by the nearest anchors.
        best = min(
            itertools.permutations(wanted, min(len(wanted), len(blobs))),
            key=lambda order: sum(_anchor_distance(b, spec.objects[i]) for b, i in zip(blobs, order, strict=True)),
        )
        matched.update(dict.fromkeys(wanted))
        matched.update(zip(best, blobs, strict=True))
    return AdherenceScore(spec, tuple(_judge(obj, matched[i]) for i, obj in enumerate(spec.objects)))


# --------------------------------------------------------------------------------------------
# Prompt parser: the synthetic caption language back into a spec


def _lexicon() -> dict[str, tuple[str, str]]:
    """Every term the parser knows -> (kind, value); kinds: color shape position size background
    filler sep. Built from the generator's own tables plus a few synonyms people type."""
    terms: dict[str, tuple[str, str]] = {}

    def add(kind: str, value: str, *words: str) -> None:
        for word in words:
            terms[word.lower()] = (kind, value)

    for color in COLORS:
        add("color", color, color, ZH_COLOR[color], ZH_COLOR[color].removesuffix("色"))
    add("color", "purple", "violet", "magenta")
    add("color", "orange", "橘色", "橘黄色")
    for shape in SHAPES:
        add("shape", shape, shape, shape + "s", *ZH_SHAPE[shape])
    add("shape", "circle", "disc", "disk", "圆圈")
    add("shape", "square", "方形")
    add("shape", "triangle", "三角")
    for pos in ANCHORS:
        add("position", pos, *EN_POSITION_SHORT[pos], *ZH_POSITION[pos])
    add("position", "center", "centre", "中心", "正中")
    add("position", "left", "左面", "左")
    add("position", "right", "右面", "右")
    add("position", "top", "顶部", "上边")
    add("position", "bottom", "底部", "下边")
    for size in EN_SIZE:
        add("size", size, *EN_SIZE[size], ZH_SIZE[size])
    add("size", "small", "little", "tiny")
    for bg in BACKGROUNDS:
        en = EN_BACKGROUND[bg]
        zh = ZH_BACKGROUND[bg]
        variants = {en, en.replace("gray", "grey")}
        add("background", bg, *(f"{v} background" for v in variants), *(f"background is {v}" for v in variants))
        zh_variants = {zh, zh.replace("灰渐变", "灰色渐变")}
        add("background", bg, *(f"{v}背景" for v in zh_variants), *(f"背景是{v}" for v in zh_variants))
    add("filler", "", "a", "an", "the", "there", "is", "are", "on", "at", "in", "near", "to", "of", "with", "side")
    add("filler", "", "一个", "一", "个", "有", "的", "在", "位于", "是")
    add("sep", "", ",", "，", ";", "；", "、", ".", "。", "!", "！", ":", "：", "and", "和", "还有", "以及")
    _grammar_terms(add)
    # Traditional characters read as their simplified forms.
    for term, meaning in list(terms.items()):
        terms.setdefault(term.translate(grammar.TRADITIONAL), meaning)
    return terms


def _grammar_terms(add: Callable[..., None]) -> None:
    """The caption grammar's words (grammar.py), its held-out ones included: the judge reads every
    phrasing the evaluation uses."""
    for pos in ANCHORS:
        add(
            "position",
            pos,
            *(w for split in (grammar.EN_POS[pos], grammar.ZH_POS[pos]) for words in split for w in words),
        )
    for shape in SHAPES:
        add("shape", shape, *grammar.EN_SHAPE[shape], *grammar.ZH_SHAPE[shape])
    for table in (grammar.EN_WORDS, grammar.ZH_WORDS):
        add("filler", "", *(w.strip() for split in table.values() for words in split for w in words if w.strip()))
    add(
        "filler",
        "",
        "one",
        "single",
        "lone",
        "exactly",
        "-colored",
        "colored",
        "placed",
        "that is",
        "放在",
        "那里",
        "把",
    )
    add("sep", "", "plus", "-")
    for bg in BACKGROUNDS:
        for v in {EN_BACKGROUND[bg], EN_BACKGROUND[bg].replace("gray", "grey")}:
            add("background", bg, f"background: {v}")
        add("background", bg, f"背景为{ZH_BACKGROUND[bg]}")


_TERMS = _lexicon()


def _term_pattern(term: str) -> str:
    # ASCII words must not be parts of longer words ("red" in "shredded"); Chinese has no spaces.
    escaped = re.escape(term)
    return rf"(?<![a-z]){escaped}(?![a-z])" if term[0].isascii() and term[0].isalpha() else escaped


_TOKEN = re.compile("|".join(_term_pattern(t) for t in sorted(_TERMS, key=len, reverse=True)))


def _tokens(prompt: str) -> list[tuple[str, str]] | None:
    """(kind, value) tokens; None when anything outside the lexicon is left between them."""
    # NFKC folds full-width letters and punctuation into ASCII ("ｃｉｒｃｌｅ", "，").
    text = " ".join(unicodedata.normalize("NFKC", prompt).lower().split())
    out: list[tuple[str, str]] = []
    at = 0
    for m in _TOKEN.finditer(text):
        if text[at : m.start()].strip():
            return None
        out.append(_TERMS[m.group(0)])
        at = m.end()
    return out if not text[at:].strip() else None


_REQUIRED = frozenset({"color", "shape", "position"})


def parse_prompt(prompt: str) -> SceneSpec | None:
    """The scene a prompt in the synthetic caption language asks for, or None (unscorable).

    Clauses are split at separators; a clause with only a position and/or size ("red circle, left
    side", "on the left, a red circle") modifies the previous object, or the next one if the previous
    already has that attribute. Every object needs a colour, a shape and a position; size and
    background are optional (None: not checked).
    """
    tokens = _tokens(prompt)
    if tokens is None:
        return None
    background: str | None = None
    clauses: list[dict[str, str]] = [{}]
    for kind, value in tokens:
        if kind == "sep":
            clauses.append({})
        elif kind == "background":
            if background is not None:
                return None
            background = value
        elif kind != "filler":
            if kind in clauses[-1]:
                return None  # two colours (or shapes...) in one clause: not our language
            clauses[-1][kind] = value
    clauses = [c for c in clauses if c]
    objects: list[dict[str, str]] = []
    pending: dict[str, str] = {}  # modifiers waiting for the next object
    for clause in clauses:
        prev = objects[-1] if objects and not pending else None
        if prev is not None and len(prev.keys() & {"color", "shape"}) == 1 and not prev.keys() & clause.keys():
            prev.update(clause)  # "a circle on the left, colored red": the missing colour (or shape)
        elif "color" in clause or "shape" in clause:
            if pending.keys() & clause.keys():
                return None
            objects.append({**pending, **clause})
            pending = {}
        elif objects and not (objects[-1].keys() & clause.keys()) and not pending:
            objects[-1].update(clause)
        elif pending.keys() & clause.keys():
            return None
        else:
            pending.update(clause)
    if pending or not objects or any(not o.keys() >= _REQUIRED for o in objects):
        return None
    specs = tuple(ObjectSpec(o["color"], o["shape"], o["position"], o.get("size")) for o in objects)
    if background is not None and any(o.color in HIDDEN_ON[background] for o in specs):
        return None  # a white circle on a white background cannot be judged from pixels
    return SceneSpec(specs, background)


def score(image: np.ndarray, prompt: str) -> AdherenceScore | None:
    """Adherence of an image to its prompt; None where the prompt is not in the synthetic language."""
    spec = parse_prompt(prompt)
    return None if spec is None else evaluate(image, spec)


# --------------------------------------------------------------------------------------------
# Editing checks


@dataclass(frozen=True)
class SeamScore:
    seam: float  # mean RGB distance between neighbouring pixels across the seam
    interior: float  # the same for neighbours inside the original image, near the seam
    band: int

    @property
    def excess(self) -> float:
        """How much rougher the seam is than the original background: ~0 when it continues."""
        return self.seam - self.interior

    def ok(self, tolerance: float = 20.0) -> bool:
        return self.excess <= tolerance


def _pairs(image: np.ndarray, mask: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour distances between neighbours along ``axis`` and both pixels' mask values."""
    first = [slice(None)] * 2
    second = [slice(None)] * 2
    first[axis], second[axis] = slice(None, -1), slice(1, None)
    a, b = image[tuple(first)], image[tuple(second)]
    return np.linalg.norm(a - b, axis=-1), mask[tuple(first)], mask[tuple(second)]


def seam_score(image: np.ndarray, new_mask: np.ndarray, band: int = 4) -> SeamScore:
    """Does the outpainted area continue the original across the seam?

    ``new_mask`` (H, W) is True on the generated area. The seam term averages colour steps between
    neighbours on either side of the boundary; the interior term averages the same steps between
    neighbours inside the original within ``band`` pixels of it (its own texture, gradient and edges).
    """
    rgb = np.asarray(image, dtype=np.float32)
    near = _grow(new_mask, band) & ~new_mask
    seam: list[np.ndarray] = []
    interior: list[np.ndarray] = []
    for axis in (0, 1):
        dist, ma, mb = _pairs(rgb, new_mask, axis)
        _, na, nb = _pairs(rgb, near, axis)
        seam.append(dist[ma != mb])
        interior.append(dist[~ma & ~mb & (na | nb)])
    seam_d, interior_d = np.concatenate(seam), np.concatenate(interior)
    return SeamScore(
        seam=float(seam_d.mean()) if seam_d.size else 0.0,
        interior=float(interior_d.mean()) if interior_d.size else 0.0,
        band=band,
    )


@dataclass(frozen=True)
class InpaintScore:
    placed: bool  # a blob of the new object's colour is centred inside the mask
    adherence: AdherenceScore  # of the new object alone, from its blob inside the mask
    outside_diff: float  # mean absolute change outside the mask, 0..255
    kept: bool  # outside_diff within tolerance

    @property
    def ok(self) -> bool:
        return self.placed and self.kept


def inpaint_score(
    result: np.ndarray, original: np.ndarray, mask: np.ndarray, new_object: ObjectSpec, tolerance: float = 3.0
) -> InpaintScore:
    """Was ``new_object`` painted inside ``mask`` (True = repainted) and the rest left alone?"""
    h, w = mask.shape

    def inside(blob: Blob) -> bool:
        return bool(mask[min(int(blob.center[0] * h), h - 1), min(int(blob.center[1] * w), w - 1)])

    # Only blobs centred in the mask count, so an existing object of the same colour is no answer.
    blob = next((b for b in find_blobs(result, new_object.color) if inside(b)), None)
    adherence = AdherenceScore(SceneSpec((new_object,)), (_judge(new_object, blob),))
    diff = np.abs(result.astype(np.int16) - original.astype(np.int16))[~mask]
    outside = float(diff.mean()) if diff.size else 0.0
    return InpaintScore(blob is not None, adherence, outside, outside <= tolerance)


def score_inpaint_case(result: np.ndarray, case: InpaintCase, tolerance: float = 3.0) -> InpaintScore:
    """``inpaint_score`` for a case from ``synthetic.sample_inpaint_case``."""
    return inpaint_score(result, case.image, case.mask, case.new_object, tolerance)
