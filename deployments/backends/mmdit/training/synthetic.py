"""Synthetic bilingual shapes dataset: the data the bundled MMDiT is trained and measured on.

A scene is one or two flat shapes (circle, square, triangle) on a plain or gradient background.
One ``SceneSpec`` drives both the renderer and the caption builder, so every image comes with its
ground truth; ``adherence.py`` reads the same vocabulary back to score generated images.

Everything random takes a ``numpy.random.Generator`` (never the global RNG): the same seed gives
the same batches. Some (color, shape, position) triples are ``HELD_OUT`` of training to measure
whether the model composes attributes rather than memorising combinations.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple, TypeVar

import numpy as np

DATA_VERSION = "shapes-v1"
DEFAULT_CANVAS = (32, 32)
CANVAS_MULTIPLE = 8  # the model's pixel patch size

RGB = tuple[int, int, int]
Triple = tuple[str, str, str]  # (color, shape, position)

SHAPES = ("circle", "square", "triangle")
# Six hues far apart on the colour wheel plus white and black: distinguishable at 32x32, and the
# hue of a colour survives blending with the grey backgrounds, which the evaluator relies on.
COLORS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (160, 50, 200),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
POSITIONS = ("left", "right", "top", "bottom", "center")
SIZES = ("small", "large")
LANGUAGES = ("en", "zh", "mixed")
# (top colour, bottom colour): plain backgrounds have both equal; gradients run top to bottom so
# that a canvas grown sideways (outpainting) has a well-defined continuation.
BACKGROUNDS: dict[str, tuple[RGB, RGB]] = {
    "white": ((250, 250, 250), (250, 250, 250)),
    "black": ((15, 15, 15), (15, 15, 15)),
    "gray": ((128, 128, 128), (128, 128, 128)),
    "light gradient": ((200, 200, 200), (135, 135, 135)),
    "dark gradient": ((115, 115, 115), (60, 60, 60)),
}
# Object colours that would vanish into a background are never drawn on it.
HIDDEN_ON: dict[str, frozenset[str]] = {
    "white": frozenset({"white"}),
    "black": frozenset({"black"}),
    "gray": frozenset(),
    "light gradient": frozenset({"white"}),
    "dark gradient": frozenset({"black"}),
}

# Geometry, as fractions of the canvas: anchors are (y, x); radii are of min(H, W).
ANCHORS: dict[str, tuple[float, float]] = {
    "left": (0.5, 0.25),
    "right": (0.5, 0.75),
    "top": (0.25, 0.5),
    "bottom": (0.75, 0.5),
    "center": (0.5, 0.5),
}
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
SIZE_FRACTION = {"small": 0.14, "large": 0.22}
POSITION_JITTER = 0.04
SIZE_JITTER = 0.05
# Shapes inside a (2r x 2r) box: square side 1.8r (about the circle's area); triangle apex-up,
# base 2r, height 1.8r, its bounding box centred on the object's centre.
SQUARE_HALF = 0.9
TRIANGLE_HALF_HEIGHT = 0.9
# Area / r^2 of each shape, and how far below its centre a shape's centroid sits (/ r).
SHAPE_AREA = {"circle": float(np.pi), "square": 4 * SQUARE_HALF**2, "triangle": 2 * TRIANGLE_HALF_HEIGHT}
CENTROID_OFFSET = {"circle": 0.0, "square": 0.0, "triangle": TRIANGLE_HALF_HEIGHT / 3}

# ~10 % of the 120 triples, spread so every colour, shape and position stays in training.
HELD_OUT: frozenset[Triple] = frozenset(
    {
        ("red", "triangle", "right"),
        ("red", "square", "bottom"),
        ("green", "circle", "top"),
        ("green", "triangle", "center"),
        ("blue", "square", "center"),
        ("blue", "circle", "bottom"),
        ("yellow", "circle", "left"),
        ("yellow", "square", "top"),
        ("purple", "triangle", "bottom"),
        ("orange", "square", "left"),
        ("white", "triangle", "top"),
        ("black", "circle", "right"),
    }
)
ALL_TRIPLES: tuple[Triple, ...] = tuple(itertools.product(COLORS, SHAPES, POSITIONS))
HELD_IN: tuple[Triple, ...] = tuple(t for t in ALL_TRIPLES if t not in HELD_OUT)


# --------------------------------------------------------------------------------------------
# Scene specs


@dataclass(frozen=True)
class ObjectSpec:
    color: str
    shape: str
    position: str
    size: str | None = None  # None: unspecified (a parsed prompt that names no size)

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}; one of {sorted(COLORS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; one of {SHAPES}")
        if self.position not in POSITIONS:
            raise ValueError(f"unknown position {self.position!r}; one of {POSITIONS}")
        if self.size is not None and self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; one of {SIZES}")

    @property
    def triple(self) -> Triple:
        return (self.color, self.shape, self.position)


@dataclass(frozen=True)
class SceneSpec:
    objects: tuple[ObjectSpec, ...]
    background: str | None = None  # None: unspecified (a parsed prompt that names none)

    def __post_init__(self) -> None:
        if self.background is not None and self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; one of {sorted(BACKGROUNDS)}")

    @property
    def held_out(self) -> bool:
        return any(o.triple in HELD_OUT for o in self.objects)


T = TypeVar("T")


def _pick(seq: Sequence[T], u: float) -> T:
    """The element of ``seq`` that a uniform draw ``u`` in [0, 1) selects."""
    return seq[min(int(u * len(seq)), len(seq) - 1)]


@functools.lru_cache(maxsize=64)
def _pool(position: str, background: str, held_out: bool) -> tuple[tuple[str, str], ...]:
    """(color, shape) pairs allowed at ``position`` on ``background`` for one split."""
    triples = HELD_OUT if held_out else HELD_IN
    return tuple(sorted((c, s) for c, s, p in triples if p == position and c not in HIDDEN_ON[background]))


_DRAWS_PER_SCENE = 7  # uniforms one scene spec consumes (fixed, so streams stay aligned)


def _scene_from_uniforms(u: np.ndarray, held_out: bool, n_objects: int | None) -> SceneSpec:
    background = _pick(tuple(BACKGROUNDS), u[0])
    count = n_objects if n_objects is not None else (1 if u[1] < 0.5 else 2)
    if count == 1:
        position = _pick(POSITIONS, u[2])
        if not _pool(position, background, held_out):  # a held-out position may have nothing here
            position = next(p for p in POSITIONS if _pool(p, background, held_out))
        color, shape = _pick(_pool(position, background, held_out), u[3])
        return SceneSpec((ObjectSpec(color, shape, position, _pick(SIZES, u[4])),), background)
    if count != 2:
        raise ValueError(f"scenes have one or two objects, not {count}")
    # Two objects sit in opposite halves, so they never overlap; the first may be held out (for
    # evaluation), the second is always held in, and their colours differ.
    first = _pick([p for p in OPPOSITE if _pool(p, background, held_out)], u[2])
    c1, s1 = _pick(_pool(first, background, held_out), u[3])
    second_pool = [(c, s) for c, s in _pool(OPPOSITE[first], background, False) if c != c1]
    c2, s2 = _pick(second_pool, u[5])
    return SceneSpec(
        (
            ObjectSpec(c1, s1, first, _pick(SIZES, u[4])),
            ObjectSpec(c2, s2, OPPOSITE[first], _pick(SIZES, u[6])),
        ),
        background,
    )


def sample_scene(rng: np.random.Generator, *, held_out: bool = False, n_objects: int | None = None) -> SceneSpec:
    """A random scene; training scenes (``held_out=False``) never contain a held-out triple."""
    return _scene_from_uniforms(rng.random(_DRAWS_PER_SCENE), held_out, n_objects)


# --------------------------------------------------------------------------------------------
# Rendering


def check_canvas(canvas: tuple[int, int]) -> tuple[int, int]:
    h, w = canvas
    if h < CANVAS_MULTIPLE or w < CANVAS_MULTIPLE or h % CANVAS_MULTIPLE or w % CANVAS_MULTIPLE:
        raise ValueError(f"canvas {h}x{w} must be positive multiples of {CANVAS_MULTIPLE} pixels")
    return int(h), int(w)


@functools.lru_cache(maxsize=32)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates, (1, H, 1) and (1, 1, W), broadcastable over a batch."""
    ys = (np.arange(h, dtype=np.float32) + 0.5).reshape(1, h, 1)
    xs = (np.arange(w, dtype=np.float32) + 0.5).reshape(1, 1, w)
    return ys, xs


def _region(position: str, h: int, w: int) -> tuple[float, float, float, float]:
    """(y0, y1, x0, x1): the part of the canvas an object at ``position`` stays inside."""
    y0, y1, x0, x1 = 0.0, float(h), 0.0, float(w)
    if position == "left":
        x1 = w / 2
    elif position == "right":
        x0 = w / 2
    elif position == "top":
        y1 = h / 2
    elif position == "bottom":
        y0 = h / 2
    return y0, y1, x0, x1


def _place(obj: ObjectSpec, h: int, w: int, u: np.ndarray | None) -> tuple[float, float, float]:
    """(cy, cx, r) in pixels; ``u`` (3 uniforms) jitters position and size, None centres it."""
    size = obj.size or "large"
    r = SIZE_FRACTION[size] * min(h, w)
    ay, ax = ANCHORS[obj.position]
    cy, cx = ay * h, ax * w
    if u is not None:
        r *= 1.0 + SIZE_JITTER * (2.0 * u[0] - 1.0)
        cy += POSITION_JITTER * h * (2.0 * u[1] - 1.0)
        cx += POSITION_JITTER * w * (2.0 * u[2] - 1.0)
    # Keep the whole shape inside its half of the canvas: opposite objects never touch, and an
    # inpainting mask over one half never cuts the other half's object.
    y0, y1, x0, x1 = _region(obj.position, h, w)
    margin = r + 0.5
    cy = min(max(cy, y0 + margin), y1 - margin) if y1 - y0 > 2 * margin else (y0 + y1) / 2
    cx = min(max(cx, x0 + margin), x1 - margin) if x1 - x0 > 2 * margin else (x0 + x1) / 2
    return float(cy), float(cx), float(r)


_SHAPE_INDEX = {s: i for i, s in enumerate(SHAPES)}
_TRI_NORM = float(np.hypot(2 * TRIANGLE_HALF_HEIGHT, 1.0))


def _alpha(
    ys: np.ndarray, xs: np.ndarray, shape: np.ndarray, cy: np.ndarray, cx: np.ndarray, r: np.ndarray
) -> np.ndarray:
    """Anti-aliased coverage (B, H, W) from signed distances (1 px ramp); params are (B,)."""
    cy, cx, r = cy[:, None, None], cx[:, None, None], r[:, None, None]
    dy = ys - cy  # (B, H, 1)
    dx = xs - cx  # (B, 1, W)
    circle = np.sqrt(dy * dy + dx * dx) - r
    square = np.maximum(np.abs(dy), np.abs(dx)) - SQUARE_HALF * r
    # Apex-up triangle: half-base r at the bottom edge, height 2 * TRIANGLE_HALF_HEIGHT * r.
    below_apex = dy + TRIANGLE_HALF_HEIGHT * r
    slant = (2 * TRIANGLE_HALF_HEIGHT * np.abs(dx) - below_apex) / _TRI_NORM
    triangle = np.maximum(slant, dy - TRIANGLE_HALF_HEIGHT * r)
    s = shape[:, None, None]
    distance = np.where(s == 0, circle, np.where(s == 1, square, triangle))
    return np.clip(0.5 - distance, 0.0, 1.0)


def shape_coverage(shape: str, cy: float, cx: float, r: float, canvas: tuple[int, int]) -> np.ndarray:
    """Coverage (H, W) in [0, 1] of one shape centred at (cy, cx) px with radius r px, as rendered."""
    ys, xs = _grid(*canvas)
    one = np.ones(1, np.float32)
    return _alpha(ys, xs, one * _SHAPE_INDEX[shape], one * cy, one * cx, one * max(r, 1e-3))[0]


def render_scenes(
    specs: Sequence[SceneSpec], canvas: tuple[int, int] = DEFAULT_CANVAS, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Render scenes to uint8 (B, H, W, 3); ``rng`` jitters positions and sizes (None: exact anchors)."""
    h, w = check_canvas(canvas)
    jitter = rng.random((len(specs), 2, 3)) if rng is not None else None
    return _render(specs, h, w, jitter)


def render(
    spec: SceneSpec, canvas: tuple[int, int] = DEFAULT_CANVAS, rng: np.random.Generator | None = None
) -> np.ndarray:
    """One scene as uint8 (H, W, 3)."""
    return render_scenes([spec], canvas, rng)[0]


def _render(specs: Sequence[SceneSpec], h: int, w: int, jitter: np.ndarray | None) -> np.ndarray:
    b = len(specs)
    ys, xs = _grid(h, w)
    slots = max((len(s.objects) for s in specs), default=0)
    top = np.empty((b, 3), np.float32)
    bottom = np.empty((b, 3), np.float32)
    params = np.zeros((slots, 5, b), np.float32)  # present, shape, cy, cx, r
    colors = np.zeros((slots, b, 3), np.float32)
    for i, spec in enumerate(specs):
        top[i], bottom[i] = BACKGROUNDS[spec.background or "gray"]
        for k, obj in enumerate(spec.objects):
            u = jitter[i, k] if jitter is not None and k < jitter.shape[1] else None
            params[k, :, i] = (1.0, _SHAPE_INDEX[obj.shape], *_place(obj, h, w, u))
            colors[k, i] = COLORS[obj.color]
    t = (ys / h)[..., None]  # (1, H, 1, 1): the gradient runs top to bottom
    image = np.broadcast_to(top[:, None, None, :] * (1.0 - t) + bottom[:, None, None, :] * t, (b, h, w, 3)).copy()
    for k in range(slots):
        present, shape, cy, cx, r = params[k]
        alpha = _alpha(ys, xs, shape.astype(np.int64), cy, cx, np.maximum(r, 1e-3)) * present[:, None, None]
        image += alpha[..., None] * (colors[k][:, None, None, :] - image)
    return np.rint(image).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Captions: the vocabulary is public so that the adherence parser reads the same words back.

EN_POSITION: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "on the left side", "to the left"),
    "right": ("on the right", "on the right side", "to the right"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "center": ("in the center", "in the middle"),
}
EN_POSITION_SHORT: dict[str, tuple[str, ...]] = {
    "left": ("left side", "left"),
    "right": ("right side", "right"),
    "top": ("top",),
    "bottom": ("bottom",),
    "center": ("center", "middle"),
}
EN_SIZE: dict[str, tuple[str, ...]] = {"small": ("small",), "large": ("large", "big")}
EN_BACKGROUND: dict[str, str] = {
    "white": "white",
    "black": "black",
    "gray": "gray",
    "light gradient": "light gray gradient",
    "dark gradient": "dark gray gradient",
}
ZH_COLOR: dict[str, str] = {
    "red": "红色",
    "orange": "橙色",
    "yellow": "黄色",
    "green": "绿色",
    "blue": "蓝色",
    "purple": "紫色",
    "white": "白色",
    "black": "黑色",
}
ZH_SHAPE: dict[str, tuple[str, ...]] = {"circle": ("圆形", "圆"), "square": ("正方形", "方块"), "triangle": ("三角形",)}
ZH_POSITION: dict[str, tuple[str, ...]] = {
    "left": ("左边", "左侧"),
    "right": ("右边", "右侧"),
    "top": ("上方", "上面"),
    "bottom": ("下方", "下面"),
    "center": ("中间", "中央"),
}
ZH_SIZE: dict[str, str] = {"small": "小", "large": "大"}
ZH_BACKGROUND: dict[str, str] = {
    "white": "白色",
    "black": "黑色",
    "gray": "灰色",
    "light gradient": "浅灰渐变",
    "dark gradient": "深灰渐变",
}

# Object phrases. Fields: ec/es/ep/eq/ez = English colour, shape, position phrase, short position,
# size ("small " or ""); zc/zs/zp = Chinese colour, shape, position; zz = "小的" or ""; zs1 = "小" or "".
OBJECT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": (
        "a {ez}{ec} {es} {ep}",
        "{ez}{ec} {es}, {eq}",
        "there is a {ez}{ec} {es} {ep}",
        "{ep}, a {ez}{ec} {es}",
        "a {ez}{es} in {ec} {ep}",
    ),
    "zh": (
        "{zp}一个{zz}{zc}{zs}",
        "{zc}的{zs1}{zs}在{zp}",
        "{zp}有一个{zz}{zc}{zs}",
        "一个{zz}{zc}{zs}，位于{zp}",
        "{zp}是一个{zz}{zc}{zs}",
    ),
    "mixed": (
        "{zp}有个 {ez}{ec} {es}",
        "{ez}{ec} {es} 在{zp}",
        "{zp}一个{zz}{zc} {es}",
        "{zz}{zc}{zs} {ep}",
        "a {ez}{ec} {es} 在{zp}",
    ),
}
JOIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("{a} and {b}", "{a}; {b}", "{a}, {b}"),
    "zh": ("{a}，{b}", "{a}；{b}", "{a}，还有{b}"),
    "mixed": ("{a}，{b}", "{a} and {b}", "{a}, {b}"),
}
_EN_BACKGROUND_TEMPLATES = ("{a}, on a {bg} background", "{a}, {bg} background", "{a} on a {bg} background")
_ZH_BACKGROUND_TEMPLATES = ("{a}，{bg}背景", "{a}，背景是{bg}")
BACKGROUND_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": _EN_BACKGROUND_TEMPLATES,
    "zh": _ZH_BACKGROUND_TEMPLATES,
    "mixed": _EN_BACKGROUND_TEMPLATES + _ZH_BACKGROUND_TEMPLATES,
}
SIZE_MENTION_P = 0.5
BACKGROUND_MENTION_P = 0.3
CAPITALIZE_P = 0.3
_AN = re.compile(r"\ba (?=[aeiou])")


@dataclass(frozen=True)
class Phrasing:
    """Every choice that turns a spec into one caption; ``caption_variants`` enumerates them."""

    language: str
    template: int
    join: int = 0
    background_template: int | None = None  # None: the background is not mentioned
    mention_size: bool = False
    word: int = 0  # picks among paraphrases of a word (cycled per table)
    capitalize: bool = False


def _fields(obj: ObjectSpec, word: int, mention_size: bool) -> dict[str, str]:
    def alt(options: tuple[str, ...]) -> str:
        return options[word % len(options)]

    size = obj.size if mention_size else None
    return {
        "ec": obj.color,
        "es": obj.shape,
        "ep": alt(EN_POSITION[obj.position]),
        "eq": alt(EN_POSITION_SHORT[obj.position]),
        "ez": alt(EN_SIZE[size]) + " " if size else "",
        "zc": ZH_COLOR[obj.color],
        "zs": alt(ZH_SHAPE[obj.shape]),
        "zp": alt(ZH_POSITION[obj.position]),
        "zz": ZH_SIZE[size] + "的" if size else "",
        "zs1": ZH_SIZE[size] if size else "",
    }


def phrase(spec: SceneSpec, phrasing: Phrasing) -> str:
    """The caption of ``spec`` under one fixed set of choices."""
    lang = phrasing.language
    template = OBJECT_TEMPLATES[lang][phrasing.template]
    parts = [
        template.format(**_fields(o, phrasing.word + i, phrasing.mention_size)) for i, o in enumerate(spec.objects)
    ]
    text = parts[0]
    for part in parts[1:]:
        text = JOIN_TEMPLATES[lang][phrasing.join].format(a=text, b=part)
    if phrasing.background_template is not None and spec.background is not None:
        bg_template = BACKGROUND_TEMPLATES[lang][phrasing.background_template]
        words = ZH_BACKGROUND if "背景" in bg_template else EN_BACKGROUND
        text = bg_template.format(a=text, bg=words[spec.background])
    text = _AN.sub("an ", text)
    if phrasing.capitalize:
        text = text[:1].upper() + text[1:]
    return text


_DRAWS_PER_CAPTION = 7


def _phrasing_from_uniforms(u: np.ndarray, language: str | None) -> Phrasing:
    lang = language or _pick(LANGUAGES, u[0])
    bg_templates = BACKGROUND_TEMPLATES[lang]
    return Phrasing(
        language=lang,
        template=_pick(range(len(OBJECT_TEMPLATES[lang])), u[1]),
        join=_pick(range(len(JOIN_TEMPLATES[lang])), u[2]),
        background_template=_pick(range(len(bg_templates)), u[3] / BACKGROUND_MENTION_P)
        if u[3] < BACKGROUND_MENTION_P
        else None,
        mention_size=bool(u[4] < SIZE_MENTION_P),
        word=_pick(range(6), u[5]),
        capitalize=bool(lang != "zh" and u[6] < CAPITALIZE_P),
    )


def caption(spec: SceneSpec, rng: np.random.Generator, language: str | None = None) -> str:
    """A random caption of ``spec`` in ``language`` ("en", "zh", "mixed"; None: any)."""
    return phrase(spec, _phrasing_from_uniforms(rng.random(_DRAWS_PER_CAPTION), language))


def caption_variants(spec: SceneSpec, language: str) -> list[tuple[str, SceneSpec]]:
    """Every template, join, background and paraphrase of ``spec`` in one language, each with
    what it says (``spec_as_captioned``): the parser's round-trip test set."""
    words = max(
        len(v) for table in (EN_POSITION, EN_POSITION_SHORT, ZH_SHAPE, ZH_POSITION, EN_SIZE) for v in table.values()
    )
    out: dict[str, SceneSpec] = {}
    for template, join, bg, size, word in itertools.product(
        range(len(OBJECT_TEMPLATES[language])),
        range(len(JOIN_TEMPLATES[language])) if len(spec.objects) > 1 else [0],
        [None, *range(len(BACKGROUND_TEMPLATES[language]))],
        (False, True),
        range(words),
    ):
        phrasing = Phrasing(language, template, join, bg, size, word)
        out[phrase(spec, phrasing)] = spec_as_captioned(spec, phrasing)
    return sorted(out.items())


def spec_as_captioned(spec: SceneSpec, phrasing: Phrasing) -> SceneSpec:
    """What a caption says about ``spec``: sizes and background dropped where not mentioned."""
    objects = tuple(
        ObjectSpec(o.color, o.shape, o.position, o.size if phrasing.mention_size else None) for o in spec.objects
    )
    return SceneSpec(objects, spec.background if phrasing.background_template is not None else None)


# --------------------------------------------------------------------------------------------
# Training batches


class Batch(NamedTuple):
    images: np.ndarray  # uint8 (B, H, W, 3)
    captions: list[str]
    specs: list[SceneSpec]


def sample_batch(
    rng: np.random.Generator,
    batch_size: int,
    canvas: tuple[int, int] = DEFAULT_CANVAS,
    *,
    held_out: bool = False,
    languages: Sequence[str] = LANGUAGES,
    grammar_share: float = 0.0,
) -> Batch:
    """Fresh random training scenes with captions; never a held-out triple unless ``held_out``.
    ``grammar_share`` of the captions come from the caption grammar's training split (grammar.py),
    the rest from the templates above.

    One array of uniforms per batch keeps it fast and makes the stream a pure function of the seed.
    """
    h, w = check_canvas(canvas)
    # Per sample: scene draws, one language draw, caption draws, then 2 objects x 3 jitter draws.
    scene_end = _DRAWS_PER_SCENE
    caption_end = scene_end + 1 + _DRAWS_PER_CAPTION
    u = rng.random((batch_size, caption_end + 6))
    specs = [_scene_from_uniforms(row[:scene_end], held_out, None) for row in u]
    captions = [
        phrase(spec, _phrasing_from_uniforms(row[scene_end + 1 : caption_end], _pick(languages, row[scene_end])))
        for spec, row in zip(specs, u, strict=True)
    ]
    images = _render(specs, h, w, u[:, caption_end:].reshape(batch_size, 2, 3))
    if grammar_share > 0:
        captions = grammar_captions(rng, specs, captions, grammar_share, languages)
    return Batch(images, captions, specs)


# --------------------------------------------------------------------------------------------
# Evaluation prompts


@dataclass(frozen=True)
class EvalItem:
    prompt: str
    spec: SceneSpec  # what the prompt says (size/background only where mentioned)
    language: str
    held_out: bool


def eval_items(
    *,
    held_out: bool,
    seed: int = 0,
    per_triple: int = 1,
    n_triples: int | None = None,
    languages: Sequence[str] = LANGUAGES,
) -> list[EvalItem]:
    """Single-object prompts for held-out (or held-in) triples, the same scenes in every language.

    Held-out: every held-out triple ``per_triple`` times. Held-in: ``n_triples`` triples (default as
    many as are held out) drawn by ``seed``. Each scene is phrased once per language, so language
    gaps are measured on identical content.
    """
    rng = np.random.default_rng(seed)
    items: list[EvalItem] = []
    for spec in eval_scenes(rng, held_out, per_triple, n_triples):
        for lang in languages:
            phrasing = _phrasing_from_uniforms(rng.random(_DRAWS_PER_CAPTION), lang)
            items.append(EvalItem(phrase(spec, phrasing), spec_as_captioned(spec, phrasing), lang, held_out))
    return items


def eval_scenes(
    rng: np.random.Generator, held_out: bool, per_triple: int, n_triples: int | None = None
) -> Iterator[SceneSpec]:
    """One-object scenes of every held-out triple (or ``n_triples`` held-in ones, default as many,
    drawn by ``rng``), ``per_triple`` each. Lazily: callers draw their phrasings from the same ``rng``
    between scenes, so a table's prompts depend only on its seed."""
    if held_out:
        triples = sorted(HELD_OUT)
    else:
        count = n_triples if n_triples is not None else len(HELD_OUT)
        triples = [HELD_IN[i] for i in sorted(rng.choice(len(HELD_IN), size=count, replace=False))]
    for (color, shape, position), _ in itertools.product(triples, range(per_triple)):
        backgrounds = [b for b in BACKGROUNDS if color not in HIDDEN_ON[b]]
        yield SceneSpec(
            (ObjectSpec(color, shape, position, _pick(SIZES, rng.random())),), _pick(backgrounds, rng.random())
        )


# --------------------------------------------------------------------------------------------
# Editing cases (inpainting and outpainting)


def region_mask(position: str, canvas: tuple[int, int], align: int = CANVAS_MULTIPLE) -> np.ndarray:
    """Bool (H, W) mask of the region an object at ``position`` lives in: a half of the canvas for
    the sides, the middle half-by-half box for the center; edges rounded outward to ``align`` px."""
    h, w = check_canvas(canvas)
    y0, y1, x0, x1 = _region(position, h, w)
    if position == "center":
        y0, y1, x0, x1 = h / 4, 3 * h / 4, w / 4, 3 * w / 4

    def down(v: float) -> int:
        return int(v // align * align)

    def up(v: float) -> int:
        return int(-(-v // align) * align)

    mask = np.zeros((h, w), dtype=bool)
    mask[down(y0) : up(y1), down(x0) : up(x1)] = True
    return mask


@dataclass(frozen=True)
class InpaintCase:
    image: np.ndarray  # uint8 (H, W, 3): the scene before
    mask: np.ndarray  # bool (H, W): True = repaint
    prompt: str  # caption of the scene after (the model is trained on full-scene captions)
    object_prompt: str  # caption of the new object alone, same language
    before: SceneSpec
    after: SceneSpec
    new_object: ObjectSpec
    language: str


def inpaint_case(
    before: SceneSpec,
    new_object: ObjectSpec,
    rng: np.random.Generator,
    canvas: tuple[int, int] = DEFAULT_CANVAS,
    language: str = "en",
) -> InpaintCase:
    """Ask for ``new_object`` in the region of its position, the rest of ``before`` kept."""
    after = SceneSpec((*before.objects, new_object), before.background)
    image = render(before, canvas, rng)
    mask = region_mask(new_object.position, canvas)
    phrasing = _phrasing_from_uniforms(rng.random(_DRAWS_PER_CAPTION), language)
    lone = SceneSpec((new_object,), after.background)
    return InpaintCase(
        image, mask, phrase(after, phrasing), phrase(lone, phrasing), before, after, new_object, language
    )


def sample_inpaint_case(
    rng: np.random.Generator,
    canvas: tuple[int, int] = DEFAULT_CANVAS,
    language: str | None = None,
    held_out: bool = False,
) -> InpaintCase:
    """A one-object scene and a new object for the opposite half (or an empty scene and any position)."""
    lang = language or _pick(LANGUAGES, rng.random())
    if rng.random() < 0.25:  # empty canvas: the new object may go anywhere, the center included
        scene = sample_scene(rng, held_out=held_out, n_objects=1)
        return inpaint_case(SceneSpec((), scene.background), scene.objects[0], rng, canvas, lang)
    scene = sample_scene(rng, held_out=held_out, n_objects=2)
    new, existing = scene.objects  # the first object (held out, where asked) is the one to paint in
    return inpaint_case(SceneSpec((existing,), scene.background), new, rng, canvas, lang)


@dataclass(frozen=True)
class OutpaintCase:
    image: np.ndarray  # uint8 (h, w, 3): the original
    prompt: str  # caption of the scene, background named, valid on the grown canvas too
    spec: SceneSpec
    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0

    def canvas_and_mask(self) -> tuple[np.ndarray, np.ndarray]:
        """The grown canvas (zeros in the new area) and its mask (True = new), as ``requests.outpainting``."""
        h, w = self.image.shape[:2]
        canvas = np.zeros((h + self.top + self.bottom, w + self.left + self.right, 3), dtype=np.uint8)
        canvas[self.top : self.top + h, self.left : self.left + w] = self.image
        mask = np.ones(canvas.shape[:2], dtype=bool)
        mask[self.top : self.top + h, self.left : self.left + w] = False
        return canvas, mask


def sample_outpaint_case(
    rng: np.random.Generator,
    canvas: tuple[int, int] = DEFAULT_CANVAS,
    grow: int = 32,
    side: str | None = None,
    language: str | None = None,
) -> OutpaintCase:
    """One object on the side away from the growth, so its position words hold on the grown canvas."""
    if grow <= 0 or grow % CANVAS_MULTIPLE:
        raise ValueError(f"grow must be a positive multiple of {CANVAS_MULTIPLE}, got {grow}")
    u = rng.random(6)
    side = side or _pick(("left", "right", "top", "bottom"), u[0])
    lang = language or _pick(LANGUAGES, u[1])
    position = OPPOSITE[side]
    # A gradient over a taller canvas is a different gradient: grow vertically on plain ones only.
    backgrounds = tuple(BACKGROUNDS) if side in ("left", "right") else ("white", "black", "gray")
    background = _pick(backgrounds, u[2])
    color, shape = _pick(_pool(position, background, False), u[3])
    spec = SceneSpec((ObjectSpec(color, shape, position, _pick(SIZES, u[4])),), background)
    phrasing = replace(_phrasing_from_uniforms(rng.random(_DRAWS_PER_CAPTION), lang), background_template=0)
    return OutpaintCase(render(spec, canvas, rng), phrase(spec, phrasing), spec, **{side: grow})


# --------------------------------------------------------------------------------------------
# Grammar captions (grammar.py): training batches and the held-out template/word splits


def grammar_captions(
    rng: np.random.Generator, specs: Sequence[SceneSpec], captions: list[str], share: float, languages: Sequence[str]
) -> list[str]:
    """``captions`` with a ``share`` of them redrawn from the caption grammar's training split.
    Draws a fixed number of uniforms per sample, whatever the share."""
    from huabu.deployments.backends.mmdit.training import grammar

    u = rng.random((len(specs), 2 + grammar.DRAWS_PER_CAPTION))
    return [
        grammar.draw(spec, row[2:], _pick(languages, row[1])).text if row[0] < share else old
        for spec, old, row in zip(specs, captions, u, strict=True)
    ]


SPLITS = ("held-out triples", "held-out templates", "both")


def grammar_eval_items(
    split: str, *, seed: int = 0, per_triple: int = 2, languages: Sequence[str] = LANGUAGES
) -> list[EvalItem]:
    """Single-object prompts from the caption grammar for one of ``SPLITS``: held-out triples in
    training templates and words; held-in triples (as many as are held out, drawn by ``seed``) in
    held-out templates and words; or held-out triples in held-out templates and words. The same
    scenes in every language, so language gaps are measured on identical content."""
    from huabu.deployments.backends.mmdit.training import grammar

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng(seed + 10 * SPLITS.index(split))
    triples_out = split != "held-out templates"
    templates_out = split != "held-out triples"
    items: list[EvalItem] = []
    for spec in eval_scenes(rng, triples_out, per_triple):
        for lang in languages:
            drawn = grammar.draw(spec, rng.random(grammar.DRAWS_PER_CAPTION), lang, held_out=templates_out)
            said = SceneSpec(
                tuple(replace(o, size=o.size if drawn.mention_size else None) for o in spec.objects),
                spec.background if drawn.mention_background else None,
            )
            items.append(EvalItem(drawn.text, said, lang, triples_out))
    return items
