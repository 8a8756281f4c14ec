"""A caption grammar for the synthetic shapes: many surface forms per language, with whole templates
and words held out of training, so evaluation measures language rather than memorised templates.

A caption is a template (a word order with slots) filled from word tables, then passed through
surface transforms (casing, punctuation, comma style, full-width forms, traditional characters,
spacing). English, Chinese and mixed: a mixed caption takes an English or a Chinese frame and fills
any slot from the other language, so the other script can appear at any position.

What is held out (``HELD_OUT_TEMPLATES``, ``HELD_OUT_WORDS``): function words, verbs, fillers,
counting words and paraphrases of place (``over on the left``, ``最左边``). The content words the
model must map to pixels (colour and shape names, the core position word) are shared: a word the
model never saw cannot be learned from pixels, but the phrasing around it can be generalised over.
Training draws only training templates and words; ``draw(..., held_out=True)`` draws the held-out
ones (a slot with no held-out word keeps its training words).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    from huabu.deployments.backends.mmdit.training.synthetic import ObjectSpec, SceneSpec

GRAMMAR_VERSION = "grammar-v1"
MAX_BYTES = 96  # the text encoder's byte limit: captions are kept under it


@dataclass(frozen=True)
class Template:
    name: str
    language: str  # "en" or "zh": the frame's language
    text: str  # slots: {verb} {exist} {art} {size} {color} {shape} {pos}; "," is a comma slot
    held_out: bool = False


# Slots ending in a space in English frames are written "{size}" (the size word brings its own
# space). Chinese frames have no spaces.
TEMPLATES: tuple[Template, ...] = (
    Template("en-verb", "en", "{verb} {art} {size}{color} {shape} {pos}"),
    Template("en-np", "en", "{art} {size}{color} {shape} {pos}"),
    Template("en-exist", "en", "{exist} {art} {size}{color} {shape} {pos}"),
    Template("en-pos-first", "en", "{pos}, {art} {size}{color} {shape}"),
    Template("en-pos-exist", "en", "{pos} {exist} {art} {size}{color} {shape}"),
    Template("en-in-color", "en", "{art} {size}{shape} in {color} {pos}"),
    Template("en-verb-comma", "en", "{verb} {art} {size}{color} {shape}, {pos}"),
    Template("en-bare", "en", "{size}{color} {shape} {pos}"),
    Template("en-colored", "en", "{art} {size}{color}-colored {shape} {pos}"),
    Template("en-colon", "en", "{pos}: {art} {size}{color} {shape}"),
    Template("en-placed", "en", "{art} {size}{color} {shape} placed {pos}"),
    Template("en-color-after", "en", "{art} {size}{shape} {pos}, colored {color}", held_out=True),
    Template("en-that-is", "en", "{verb} {art} {size}{shape} that is {color}, {pos}", held_out=True),
    Template("en-pos-verb", "en", "{pos} {verb} {art} {size}{color} {shape}", held_out=True),
    Template("zh-verb", "zh", "{verb}{art}{size}{color}{shape}在{pos}"),
    Template("zh-at-verb", "zh", "在{pos}{verb}{art}{size}{color}的{shape}"),
    Template("zh-exist", "zh", "{pos}{exist}{art}{size}{color}{shape}"),
    Template("zh-located", "zh", "{art}{size}{color}{shape}位于{pos}"),
    Template("zh-colon", "zh", "{pos}：{size}{color}{shape}"),
    Template("zh-put", "zh", "{size}{color}的{shape}放在{pos}"),
    Template("zh-is", "zh", "{pos}是{art}{size}{color}{shape}"),
    Template("zh-list", "zh", "{size}{shape}，{color}，在{pos}", held_out=True),
    Template("zh-ba", "zh", "把{art}{size}{color}{shape}{verb}在{pos}", held_out=True),
    Template("zh-there", "zh", "{pos}那里{exist}{art}{size}{color}{shape}", held_out=True),
)
HELD_OUT_TEMPLATES: frozenset[str] = frozenset(t.name for t in TEMPLATES if t.held_out)

# Function words per language: (training words, held-out words).
EN_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "verb": (("draw", "show", "make", "create", "give me", "render", "generate", "I want"), ("sketch", "paint")),
    "exist": (("there is", "there's", "we see", "you can see"), ("I see", "I spot")),
    "art": (("a", "one", "a single"), ("a lone", "exactly one")),
    "prefix": (
        ("", "", "", "", "please ", "picture of ", "an image with ", "a drawing of "),
        ("kindly ", "a photo of "),
    ),
    "suffix": (("", "", "", "", " please", " thanks", " on the canvas"), (" if you can",)),
}
POLITE = frozenset({"", "please ", "kindly "})
ZH_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "verb": (("画", "画出", "生成", "给我画", "来"), ("绘制", "描绘")),
    "exist": (("有", "放着", "摆着"), ("出现了", "存在")),
    "art": (("一个", "个", "一"), ("一枚", "一只")),
    "prefix": (("", "", "", "请", "帮我", "我想要"), ("麻烦", "劳驾")),
    "suffix": (("", "", "", "吧", "谢谢"), ("哦",)),
}
# Content words: value -> (training, held-out); held-out paraphrases keep the core word.
EN_POS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "left": (
        ("on the left", "to the left", "on the left side", "at the left", "left side", "in the left half"),
        ("over on the left", "on the left-hand side"),
    ),
    "right": (
        ("on the right", "to the right", "on the right side", "at the right", "right side", "in the right half"),
        ("over on the right", "on the right-hand side"),
    ),
    "top": (
        ("at the top", "near the top", "on top", "up top", "in the top half", "at the top edge"),
        ("way up at the top", "toward the top"),
    ),
    "bottom": (
        ("at the bottom", "near the bottom", "down at the bottom", "in the bottom half", "at the bottom edge"),
        ("way down at the bottom", "toward the bottom"),
    ),
    "center": (
        ("in the center", "in the middle", "centered", "in the centre", "at the center"),
        ("in the very middle", "dead center"),
    ),
}
ZH_POS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "left": (("左边", "左侧", "左面", "靠左", "左半边"), ("最左边", "偏左")),
    "right": (("右边", "右侧", "右面", "靠右", "右半边"), ("最右边", "偏右")),
    "top": (("上方", "上面", "上边", "顶部", "上半部分"), ("最上面", "偏上")),
    "bottom": (("下方", "下面", "下边", "底部", "下半部分"), ("最下面", "偏下")),
    "center": (("中间", "中央", "正中", "中心"), ("当中", "最中间")),
}
EN_SHAPE: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disk"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
}
ZH_SHAPE: dict[str, tuple[str, ...]] = {
    "circle": ("圆形", "圆", "圆圈"),
    "square": ("正方形", "方块", "方形"),
    "triangle": ("三角形", "三角"),
}
EN_SIZE: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
ZH_SIZE: dict[str, tuple[str, ...]] = {"small": ("小", "小的"), "large": ("大", "大的")}
ZH_COLOR_SHORT_OK = ("红", "黄", "绿", "蓝", "紫", "白", "黑")  # "橙" alone reads oddly; kept with 色
EN_JOIN = (" and ", ", ", "; ", ", and ", " plus ")
ZH_JOIN = ("，", "；", "，还有", "和", "、")
EN_BACKGROUND_FORMS = (", on a {bg} background", " on a {bg} background", ", {bg} background", ". background: {bg}")
ZH_BACKGROUND_FORMS = ("，{bg}背景", "，背景是{bg}", "，背景为{bg}")

HELD_OUT_WORDS: frozenset[str] = frozenset(
    w.strip() for table in (EN_WORDS, ZH_WORDS, EN_POS, ZH_POS) for _, held in table.values() for w in held if w.strip()
)

# Simplified -> traditional for every character the grammar and the caption tables use.
TRADITIONAL = str.maketrans(
    "红绿蓝黄圆块边侧间顶画个于给来请帮着摆现当里烦劳驾谢渐变浅还带绘只为",
    "紅綠藍黃圓塊邊側間頂畫個於給來請幫著擺現當裡煩勞駕謝漸變淺還帶繪隻為",
)
_FULL_WIDTH = {c: chr(ord(c) + 0xFEE0) for c in map(chr, range(0x21, 0x7F))} | {" ": "\u3000"}
_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
_AN = re.compile(r"\b([aA]) (?=[aeiouAEIOU])")


T = TypeVar("T")


class Draws:
    """Uniforms consumed in order from a fixed-size row (wrapping), so a caption is a pure function
    of its row and a batch consumes a fixed number of draws whatever the caption looks like."""

    def __init__(self, row: np.ndarray) -> None:
        self.row, self.at = row, 0

    def u(self) -> float:
        value = float(self.row[self.at % len(self.row)])
        self.at += 1
        return value

    def pick(self, options: Sequence[T]) -> T:
        return options[min(int(self.u() * len(options)), len(options) - 1)]

    def chance(self, p: float) -> bool:
        return self.u() < p


DRAWS_PER_CAPTION = 48
_GLUE = "\x00"  # marks where an unspaced English word meets its neighbour


HELD_OUT_WORD_P = 0.6  # held-out prompts use a held-out word where a slot has one this often


def _words(
    table: dict[str, tuple[tuple[str, ...], tuple[str, ...]]], key: str, held_out: bool, d: Draws
) -> tuple[str, ...]:
    train, held = table[key]
    return held if held_out and held and d.chance(HELD_OUT_WORD_P) else train


def templates(language: str, held_out: bool) -> tuple[Template, ...]:
    """The templates of a frame language ("en", "zh") in one split."""
    return tuple(t for t in TEMPLATES if t.language == language and t.held_out == held_out)


def _slot_words(obj: ObjectSpec, lang: str, d: Draws, held_out: bool, mention_size: bool) -> dict[str, str]:
    from huabu.deployments.backends.mmdit.training.synthetic import ZH_COLOR

    if lang == "en":
        return {
            "color": obj.color,
            "shape": d.pick(EN_SHAPE[obj.shape]),
            "pos": d.pick(_words(EN_POS, obj.position, held_out, d)),
            "size": d.pick(EN_SIZE[obj.size]) + " " if mention_size and obj.size else "",
        }
    color = ZH_COLOR[obj.color]
    short = color.removesuffix("色")
    return {
        "color": short if short in ZH_COLOR_SHORT_OK and d.chance(0.3) else color,
        "shape": d.pick(ZH_SHAPE[obj.shape]),
        "pos": d.pick(_words(ZH_POS, obj.position, held_out, d)),
        "size": d.pick(ZH_SIZE[obj.size]) if mention_size and obj.size else "",
    }


def _object_phrase(obj: ObjectSpec, frame: Template, mixed: bool, d: Draws, held_out: bool, mention: bool) -> str:
    lang = frame.language
    other = "zh" if lang == "en" else "en"
    own = _slot_words(obj, lang, d, held_out, mention)
    alien = _slot_words(obj, other, d, held_out, mention)
    table = EN_WORDS if lang == "en" else ZH_WORDS
    words = {k: d.pick(_words(table, k, held_out, d)) for k in ("verb", "exist", "art")}
    slots = dict(own)
    if mixed:
        keys = [k for k in ("color", "shape", "pos", "size") if own[k]]
        swapped = [k for k in keys if d.chance(0.5)] or [d.pick(keys)]
        if len(swapped) == len(keys):  # every slot swapped could leave one script only
            swapped.pop()
        for k in swapped:
            word = alien[k].strip()
            # An English word in a Chinese frame: spaced or not; a Chinese word in an English frame
            # takes the frame's spaces.
            if lang == "zh":  # spaced or not; two unspaced English words still get one space
                word = f" {word} " if d.chance(0.5) else f"{_GLUE}{word}{_GLUE}"
            elif k == "size":
                word += " "
            slots[k] = word
    if lang == "en" and "{size}" in frame.text and slots["size"] and not slots["size"].endswith(" "):
        slots["size"] += " "
    text = frame.text.format(**words, **slots)
    return text.replace(_GLUE * 2, " ").replace(_GLUE + " ", " ").replace(" " + _GLUE, " ").replace(_GLUE, "")


def _surface(text: str, d: Draws, language: str, objects: int) -> str:
    """Casing, comma style, ending punctuation, traditional characters, full-width and spacing."""
    comma = d.pick([", ", ", ", "，", " , ", " - ", " "])
    if comma == " " and objects > 1:  # two objects need their separator
        comma = ", "
    text = text.replace(", ", comma) if "," in text else text
    if language != "zh":
        style = d.u()
        if style < 0.55:
            pass
        elif style < 0.8:
            text = text[:1].upper() + text[1:]
        elif style < 0.9:
            text = text.title()
        else:
            text = text.upper()
    if _CJK.search(text):
        text += d.pick(["", "", "。", "！", "."])
        if d.chance(0.25):
            text = text.translate(TRADITIONAL)
        if d.chance(0.15):
            full = "".join(_FULL_WIDTH.get(c, c) if c.isascii() and (c.isalnum() or c in ",.:;!?") else c for c in text)
            text = full if len(full.encode()) <= MAX_BYTES else text
    else:
        text += d.pick(["", "", "", ".", "!", " ."])
    if d.chance(0.08):
        text = re.sub(" ", "  ", text, count=1)
    if d.chance(0.05):
        text = " " + text + " "
    return text


@dataclass(frozen=True)
class Drawn:
    text: str
    templates: tuple[str, ...]  # template name per object
    language: str
    mention_size: bool
    mention_background: bool


def draw(
    spec: SceneSpec,
    row: np.ndarray,
    language: str,
    *,
    held_out: bool = False,
    size_p: float = 0.5,
    background_p: float = 0.3,
) -> Drawn:
    """A caption of ``spec`` in ``language`` from one row of uniforms; ``held_out`` draws the held-out
    templates and words. Kept under the encoder's byte limit (fillers, then the background, dropped)."""
    from huabu.deployments.backends.mmdit.training.synthetic import EN_BACKGROUND, ZH_BACKGROUND

    d = Draws(row)
    mixed = language == "mixed"
    frame_lang = language if not mixed else d.pick(["en", "zh"])
    mention_size = d.chance(size_p)
    mention_bg = spec.background is not None and d.chance(background_p)
    frames = [d.pick(templates(frame_lang, held_out)) for _ in spec.objects]
    table = EN_WORDS if frame_lang == "en" else ZH_WORDS
    prefix, suffix = d.pick(_words(table, "prefix", held_out, d)), d.pick(_words(table, "suffix", held_out, d))
    if frame_lang == "en" and not frames[0].text.startswith(("{art}", "{size}")) and prefix not in POLITE:
        prefix = ""  # "a picture of" goes before a noun phrase, not a verb or a place
    bg_zh = frame_lang == "zh" if not mixed else d.chance(0.5)
    bg_form = d.pick(ZH_BACKGROUND_FORMS if bg_zh else EN_BACKGROUND_FORMS)
    join = d.pick(ZH_JOIN if frame_lang == "zh" else EN_JOIN)
    parts = [_object_phrase(o, f, mixed, d, held_out, mention_size) for o, f in zip(spec.objects, frames, strict=True)]
    body = join.join(parts)
    bg = ""
    if mention_bg and spec.background is not None:
        bg = bg_form.format(bg=(ZH_BACKGROUND if bg_zh else EN_BACKGROUND)[spec.background])
    surface_row = d.u()
    for with_fillers, with_bg in ((True, True), (False, True), (False, False)):
        text = (prefix if with_fillers else "") + body + (bg if with_bg else "") + (suffix if with_fillers else "")
        text = _AN.sub(r"\1n ", text)
        text = _surface(text, Draws(np.roll(row, -int(surface_row * len(row)))), language, len(spec.objects))
        if len(text.encode()) <= MAX_BYTES:
            break
    return Drawn(text, tuple(f.name for f in frames), language, mention_size, bool(mention_bg and with_bg))


def training_vocabulary_sample(seed: int = 0, n: int = 20_000) -> list[str]:
    """Many training captions (for the hold-out invariants' tests and for inspection)."""
    from huabu.deployments.backends.mmdit.training.synthetic import LANGUAGES, sample_scene

    rng = np.random.default_rng(seed)
    out = []
    for i, lang in zip(range(n), itertools.cycle(LANGUAGES), strict=False):
        del i
        out.append(draw(sample_scene(rng), rng.random(DRAWS_PER_CAPTION), lang).text)
    return out
