"""Style-controlled prompts: the article's topics first, then a fixed house style and a negative prompt.

Topics come first because a model with a short text limit truncates from the end. The prompt is a
pure function of (topics, language, style), so articles about the same topics send the same
request and the server's cache answers all but the first.
"""

from __future__ import annotations

from dataclasses import dataclass

from topics import Language


@dataclass(frozen=True)
class Style:
    name: str
    look: dict[str, str]  # language -> style words
    avoid: dict[str, str]  # language -> negative prompt

    def prompt(self, topics: list[str], lang: Language) -> str:
        if not topics:
            raise ValueError("no topics: the article has no text to draw from")
        separator = "、" if lang == "zh" else ", "
        joiner = "；" if lang == "zh" else "; "
        return f"{separator.join(topics)}{joiner}{self.look[lang]}"

    def negative_prompt(self, lang: Language) -> str:
        return self.avoid[lang]


_NO_TEXT = {
    "en": "text, letters, words, watermark, logo, signature, oversaturated, cluttered",
    "zh": "文字，字母，水印，标志，签名，高饱和，杂乱",
}

STYLES: dict[str, Style] = {
    style.name: style
    for style in (
        Style(
            "minimal",
            {
                "en": "modern minimal flat illustration, low saturation, muted colors, clean shapes, no text, no logos",
                "zh": "现代极简扁平插画，低饱和度，柔和色调，简洁构图，无文字，无标志",
            },
            _NO_TEXT,
        ),
        Style(
            "isometric",
            {
                "en": "minimal isometric 3d scene, soft light, low saturation pastel colors, no text, no logos",
                "zh": "极简等距三维场景，柔和光线，低饱和马卡龙色，无文字，无标志",
            },
            _NO_TEXT,
        ),
        Style(
            "paper",
            {
                "en": "minimal paper cut illustration, layered paper, low saturation, soft shadows, no text, no logos",
                "zh": "极简剪纸风插画，层叠纸张，低饱和度，柔和阴影，无文字，无标志",
            },
            _NO_TEXT,
        ),
    )
}
