"""Main topics of an article, offline: jieba's TF-IDF for Chinese, YAKE for English.

Both ship what they need inside their pip packages (jieba its dictionary, yake its stop words), so
nothing is downloaded at run time.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

Language = Literal["zh", "en"]

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
# Markdown that carries no topic: code, images, link targets, HTML, URLs, markup characters.
_FENCED = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_HTML = re.compile(r"<[^>\n]+>")
_URL = re.compile(r"https?://\S+")
_MARKUP = re.compile(r"^\s{0,3}(#{1,6}|>|[-*+]|\d+\.)\s+|[*_|]{1,3}", re.MULTILINE)
# Parts of speech jieba tags as nouns (common, person, place, organisation, other) and verbal nouns.
_ZH_NOUNS = ("n", "nr", "ns", "nt", "nz", "vn")


def language(text: str) -> Language:
    """'zh' when Han characters are at least a fifth of the letters, else 'en'."""
    han = len(_HAN.findall(text))
    latin = len(_LATIN.findall(text))
    return "zh" if han and han * 5 >= han + latin else "en"


def plain_text(markdown: str) -> str:
    text = _FENCED.sub(" ", markdown)
    for pattern, replacement in ((_INLINE_CODE, " "), (_IMAGE, " "), (_LINK, r"\1"), (_HTML, " "), (_URL, " ")):
        text = pattern.sub(replacement, text)
    return _MARKUP.sub(" ", text)


def extract_topics(text: str, lang: Language, count: int = 3) -> list[str]:
    """The ``count`` most characteristic keywords or key phrases, best first (deterministic)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    text = plain_text(text)
    candidates = _chinese(text, count * 4) if lang == "zh" else _english(text, count * 4)
    return _distinct(candidates, count)


def _overlaps(a: str, b: str) -> bool:
    """ "龙井" vs "龙井茶", "sourdough" vs "good sourdough": the same topic twice."""
    return a in b or b in a or bool(set(a.split()) & set(b.split()))


def _distinct(candidates: list[str], count: int) -> list[str]:
    chosen: list[str] = []
    for candidate in candidates:
        if not any(_overlaps(candidate, c) for c in chosen):
            chosen.append(candidate)
        if len(chosen) == count:
            break
    return chosen


def _chinese(text: str, top: int) -> list[str]:
    import jieba
    import jieba.analyse

    jieba.setLogLevel(logging.WARNING)  # it logs its dictionary loading at INFO
    nouns = jieba.analyse.extract_tags(text, topK=top, allowPOS=_ZH_NOUNS)
    return [str(t) for t in nouns] or [str(t) for t in jieba.analyse.extract_tags(text, topK=top)]


def _english(text: str, top: int) -> list[str]:
    import yake

    # Up to two-word phrases; lower YAKE scores are more relevant (it returns them sorted).
    extractor = yake.KeywordExtractor(lan="en", n=2, dedupLim=0.7, top=top)
    return [phrase.lower() for phrase, _score in extractor.extract_keywords(text)]
