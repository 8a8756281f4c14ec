"""Prompt normalisation: turn an adversarial prompt into a few canonical *views* to match against.

One canonical string is not enough. Collapsing every separator catches ``n.u.d.e`` but also glues real
words together ("a nude" -> "anude", "理性，交流" -> "理性交流"), and undoing leetspeak everywhere turns
"4k" into "ak". So :func:`normalize` returns several views, each with its own matching rule:

* ``word_views``: space-separated tokens (plain; leetspeak undone; tokens glued by in-word separators
  such as ``.-_*`` joined; letters repeated 3+ times squeezed). English terms match on word boundaries.
* ``runs``: runs of three or more single letters (``n u d e`` -> ``nude``), matched as whole words.
* ``han_views``: the text itself, and a copy where separators next to a lone Chinese character are
  removed (``裸 体`` -> ``裸体``), for substring matching of Chinese terms.
* ``semantic_text``: one de-obfuscated string for the embedding model.

Every view starts from :func:`canonical`: NFKC (full-width -> half-width, ligatures, circled letters),
case folding, invisible/control characters removed, accents stripped, Latin look-alikes from
Cyrillic/Greek mapped inside mixed-script words, and traditional Chinese mapped to simplified.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

__all__ = ["NormalizedText", "canonical", "normalize", "to_simplified"]

# Leetspeak substitutions. '1' is ambiguous (i or l), so it yields views: all i, all l, and "mixed"
# where a doubled "11" reads "ll" and a single 1 reads i ("k1ll a11" -> "kill all").
_LEET: dict[str, str] = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
_LEET_ONE = ("i", "l", "mixed")

# Cyrillic and Greek letters that render like Latin ones ("nudе" with a Cyrillic е). Applied only inside
# words that also contain Latin letters, so genuine Russian or Greek text is left alone.
_CONFUSABLES: dict[str, str] = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "ω": "w",
}  # fmt: skip

_DECORATIVE_MARK_RE = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"


def _script_marks() -> str:
    """A character class body of the combining marks that belong to a script's letters (Devanagari,
    Bengali, Thai, Arabic, Hebrew ... vowel signs, viramas, nuktas). Python's ``\\w`` does not match
    them, so without this "नंगी" split into "न ग" and the embedding saw "नग" (round 5)."""
    ranges: list[str] = []
    start = prev = -2
    for cp in range(0x0300, 0x10000):
        ch = chr(cp)
        if unicodedata.category(ch) in ("Mn", "Mc", "Me") and not _DECORATIVE_MARK_RE.match(ch):
            if cp != prev + 1:
                if start >= 0:
                    ranges.append(f"\\u{start:04x}-\\u{prev:04x}")
                start = cp
            prev = cp
    ranges.append(f"\\u{start:04x}-\\u{prev:04x}")
    return "".join(ranges)


# Tokens: a run of Han characters, or a run of other word characters (with their scripts' combining
# marks) plus the leet symbols @ and $. A mark only continues a token: an emoji's variation selector
# (U+FE0F, also a mark) after "❤" must not become a word of its own.
_TOKEN_RE = re.compile(rf"[{_HAN}]+|(?:[^\W_{_HAN}]|[@$])(?:[^\W_{_HAN}]|[@$]|[{_script_marks()}])*")
# Separators that end a clause or a word for good: whitespace and ordinary punctuation. Anything else
# between two tokens (. - _ * ~ + / | · ♥ ...) is treated as an in-word separator used to dodge filters.
_CLAUSE_SEP_RE = re.compile(r"[\s,;:!?()\[\]{}\"<>，。、；：！？（）【】《》「」『』〈〉“”‘’]")
_BREAK_RE = re.compile(r"[,;:!?|\n，。、；：！？]")
_LATIN_LETTER_RE = re.compile(r"[a-z]")
_LEET_CHAR_RE = re.compile(r"[0-9@$]")
_INNER_LEET_RE = re.compile(r"[a-z][0-9]+[a-z]")
_HAN_CHAR_RE = re.compile(rf"[{_HAN}]")
_SPACES_RE = re.compile(r"\s+")
_TRIPLE_RE = re.compile(r"([a-z])\1{2,}")
# Pieces of text for compacting Chinese: Han runs, separator runs, everything else.
_HAN_PIECE_RE = re.compile(rf"[{_HAN}]+|[^\w{_HAN}]+|[^{_HAN}\W]+|_+")


@lru_cache(maxsize=1)
def _t2s_table() -> dict[int, str]:
    data = json.loads(resources.files("huabu.filters").joinpath("data/t2s.json").read_text(encoding="utf-8"))
    return {ord(k): v for k, v in data["map"].items()}


def to_simplified(text: str) -> str:
    """Map traditional Chinese characters to simplified ones (character by character)."""
    return text.translate(_t2s_table())


def _strip_invisible(text: str) -> str:
    # Zero-width spaces/joiners, BOM, bidi controls (Cf), control characters (Cc), private use (Co) are
    # dropped so that "nu\u200bde" reads "nude"; tabs and newlines become spaces.
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Co", "Cs"):
            if ch in "\t\n\r\x0b\x0c":
                out.append(" ")
            continue
        out.append(ch)
    return "".join(out)


def _strip_marks(text: str) -> str:
    # "nüde", "n̲u̲d̲e̲": decompose and drop combining marks. Han characters have no decomposition.
    decomposed = unicodedata.normalize("NFD", text)
    if decomposed == text and text.isascii():
        return text
    # Only the generic combining blocks (accents, underlines, overlays) are dropped: kana voicing marks
    # (ド = ト + U+3099), Devanagari or Thai vowel signs carry meaning, and dropping them garbles the
    # text the embedding model sees.
    kept = "".join(ch for ch in decomposed if not _DECORATIVE_MARK_RE.match(ch))
    return unicodedata.normalize("NFC", kept)


def _fix_confusables(text: str) -> str:
    if text.isascii():
        return text

    def fix(match: re.Match[str]) -> str:
        word = match.group(0)
        if _LATIN_LETTER_RE.search(word) and any(ch in _CONFUSABLES for ch in word):
            return "".join(_CONFUSABLES.get(ch, ch) for ch in word)
        return word

    return re.sub(r"\w+", fix, text)


def canonical(text: str) -> str:
    """The base form every view starts from (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text)
    text = _strip_invisible(text)
    text = text.casefold()
    text = _strip_marks(text)
    text = _fix_confusables(text)
    text = to_simplified(text)
    return _SPACES_RE.sub(" ", text).strip()


def _is_han(token: str) -> bool:
    return bool(_HAN_CHAR_RE.match(token))


def _deleet(token: str, one: str) -> str:
    # Only words that mix letters with digits/symbols are decoded: "s3x" -> "sex". Pure numbers stay, and
    # the plain view keeps the original token ("4k", "3d") next to the decoded one.
    if not _LATIN_LETTER_RE.search(token) or not _LEET_CHAR_RE.search(token):
        return token
    if one == "mixed":
        token, one = token.replace("11", "ll"), "i"
    return "".join(_LEET.get(ch, one if ch == "1" else ch) for ch in token)


def _deleet_strict(token: str) -> str:
    # For the embedding there is a single text, so "4k", "3d" or "mp4" must survive: decode only words
    # where a digit sits between letters ("p0rn", "nak3d") or that use the symbols @ and $.
    if _INNER_LEET_RE.search(token) or (("@" in token or "$" in token) and _LATIN_LETTER_RE.search(token)):
        return _deleet(token, _LEET_ONE[0])
    return token


@dataclass(frozen=True, slots=True)
class NormalizedText:
    """The views of one prompt. Never logged: it holds the prompt's text."""

    base: str
    word_views: tuple[str, ...]
    runs: tuple[str, ...]
    han_views: tuple[str, ...]
    semantic_text: str


def _groups(base: str) -> tuple[list[list[str]], list[bool]]:
    """Tokens grouped by in-word separators: "n.u.d.e woman" -> [["n","u","d","e"], ["woman"]].

    Also returns, per group, whether a clause break (comma, full stop, ...) precedes it.
    """
    groups: list[list[str]] = []
    breaks: list[bool] = []
    prev_end = -1
    prev_han = False
    for m in _TOKEN_RE.finditer(base):
        token = m.group(0)
        han = _is_han(token)
        sep = base[prev_end : m.start()] if prev_end >= 0 else " "
        glue = bool(sep) and not _CLAUSE_SEP_RE.search(sep) and not han and not prev_han
        if groups and glue:
            groups[-1].append(token)
        else:
            groups.append([token])
            breaks.append(bool(_BREAK_RE.search(sep)) or ("." in sep and " " in sep))
        prev_end, prev_han = m.end(), han
    return groups, breaks


def _single_letter_runs(words: list[str], one: str) -> list[str]:
    """Join runs of >= 3 one-letter words ("s e x", "s 3 x" -> "sex"); also without a leading "a"/"i" word."""
    runs: list[str] = []
    current: list[str] = []
    for word in [*words, ""]:
        if len(word) == 1 and (_LATIN_LETTER_RE.match(word) or word in _LEET or word == "1"):
            current.append(_LEET.get(word, ("i" if one == "mixed" else one) if word == "1" else word))
            continue
        if len(current) >= 3 and sum(w not in _LEET for w in current) >= 2:
            runs.append("".join(current))
            # "i s e x" is the pronoun "i" followed by a spaced-out word.
            if current[0] in ("a", "i") and len(current) >= 4:
                runs.append("".join(current[1:]))
        current = []
    return runs


def _compact_han(base: str) -> str:
    """Drop separators next to a lone Han character: "裸 体" -> "裸体", but keep "理性，交流" apart."""
    pieces = _HAN_PIECE_RE.findall(base)
    out: list[str] = []
    for i, piece in enumerate(pieces):
        if 0 < i < len(pieces) - 1 and not _is_han(piece) and not piece[0].isalnum():
            left, right = pieces[i - 1], pieces[i + 1]
            if _is_han(left) and _is_han(right) and (len(left) == 1 or len(right) == 1):
                continue
        out.append(piece)
    return "".join(out)


def normalize(text: str) -> NormalizedText:
    """Build every matching view of ``text``. Pure, deterministic and cheap (well under a millisecond)."""
    base = canonical(text)
    groups, breaks = _groups(base)
    tokens = [t for g in groups for t in g]
    glued = any(len(g) > 1 for g in groups)

    word_views = [" ".join(tokens)]
    runs: list[str] = []
    for one in _LEET_ONE if "1" in base else _LEET_ONE[:1]:
        word_views.append(" ".join(_deleet(t, one) for t in tokens))
        joined = ["".join(_deleet(t, one) for t in g) for g in groups]
        if glued:
            word_views.append(" ".join(joined))
        # Runs come from the joined groups, so "n.u.d.e" and "n u d e" are both handled.
        runs.extend(_single_letter_runs(joined, one))
    # Stretched words ("nuuuude", "pooorn"): a letter repeated three or more times counts once. Two
    # repeats are left alone, they are ordinary spelling ("boobs", "seed").
    word_views.extend([_TRIPLE_RE.sub(r"\1", v) for v in word_views if _TRIPLE_RE.search(v)])

    han_views = [base]
    compact = _compact_han(base)
    if compact != base:
        han_views.append(compact)

    return NormalizedText(
        base=base,
        word_views=tuple(dict.fromkeys(word_views)),
        runs=tuple(dict.fromkeys(runs)),
        han_views=tuple(han_views),
        semantic_text=_semantic_text(["".join(_deleet_strict(t) for t in g) for g in groups], breaks),
    )


def _semantic_text(groups: list[str], breaks: list[bool]) -> str:
    """De-obfuscated text for the embedding: leet undone, spaced-out letters and lone Han chars joined.

    Clause breaks are kept as ", " so that the semantic check can also embed clause by clause.
    """
    out: list[str] = []
    pending: list[str] = []  # a run of one-character words waiting to be joined

    def flush() -> None:
        if len(pending) >= 4 and pending[0] in ("a", "i"):
            out.extend((pending[0], "".join(pending[1:])))  # "i s e x" -> "i sex"
        elif len(pending) >= 3 or (pending and all(_is_han(p) for p in pending)):
            out.append("".join(pending))
        else:
            out.extend(pending)
        pending.clear()

    for word, brk in zip(groups, breaks, strict=True):
        if brk and (out or pending):
            flush()
            out.append(",")
        lone = len(word) == 1 and (_LATIN_LETTER_RE.match(word) is not None or _is_han(word))
        if lone and (not pending or _is_han(pending[-1]) == _is_han(word)):
            pending.append(word)
            continue
        flush()
        if lone:
            pending.append(word)
        else:
            out.append(word)
    flush()
    return " ".join(out).replace(" , ", ", ")
