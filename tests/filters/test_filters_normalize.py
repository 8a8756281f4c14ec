"""Normalisation: every evasion trick maps to the plain word, and benign text is not glued into one."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest
import yaml

from huabu.filters.normalize import canonical, normalize, to_simplified


def all_views(text: str) -> set[str]:
    n = normalize(text)
    return {*n.word_views, *n.runs, *n.han_views}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ＮＵＤＥ", "nude"),  # full-width
        ("Nu\u200bde", "nude"),  # zero-width space
        ("nu\u200c\u200dde\ufeff", "nude"),  # ZWNJ, ZWJ, BOM
        ("nu\x00d\x07e", "nude"),  # control characters
        ("ⓝⓤⓓⓔ", "nude"),  # circled letters (NFKC)
        ("𝐧𝐮𝐝𝐞", "nude"),  # mathematical bold (NFKC)
        ("nüdé", "nude"),  # accents
        ("n̲u̲d̲e̲", "nude"),  # combining underline
        ("NUDE", "nude"),  # case
        ("STRASSE", "strasse"),
        ("nud\u0435", "nude"),  # Cyrillic e inside a Latin word
        ("a\tb\nc", "a b c"),  # whitespace collapsed
    ],
)
def test_canonical(raw: str, expected: str) -> None:
    assert canonical(raw) == expected


def test_confusables_leave_real_cyrillic_alone() -> None:
    assert canonical("Привет мир") == "привет мир"


def test_traditional_to_simplified() -> None:
    assert to_simplified("裸體做愛屍體殺") == "裸体做爱尸体杀"
    assert canonical("色情圖片") == "色情图片"
    assert to_simplified("科技蓝风格封面") == "科技蓝风格封面"  # simplified text is unchanged


@pytest.mark.parametrize("raw", ["n.u.d.e", "n-u-d-e", "n_u_d_e", "n u d e", "n*u*d*e", "n . u . d . e", "n❤u❤d❤e"])
def test_spaced_out_letters_are_joined(raw: str) -> None:
    assert "nude" in all_views(f"a {raw} woman") | {v for v in normalize(raw).word_views}


def test_in_word_separators_join_chunks() -> None:
    assert "nude woman" in normalize("nu-de woman").word_views


def test_no_join_across_real_words() -> None:
    views = all_views("a nude-colored dress, a nice day")
    assert not any("anude" in v for v in views)
    # "s e x y" is the run "sexy", never "sex"
    assert normalize("s e x y").runs == ("sexy",)
    # a leading pronoun is split off: "i s e x" -> "sex"
    assert "sex" in normalize("i s e x").runs


@pytest.mark.parametrize(
    ("raw", "word"),
    [("p0rn", "porn"), ("s3x", "sex"), ("nak3d", "naked"), ("h3nt@i", "hentai"), ("$ex", "sex"), ("jew5", "jews"),
     ("t0pl3ss", "topless"), ("k1ll", "kill"), ("l0l1", "loli"), ("1oli", "loli"), ("s 3 x", "sex")],
)  # fmt: skip
def test_leetspeak(raw: str, word: str) -> None:
    assert word in " ".join(all_views(raw)).split()


def test_stretched_words_are_squeezed() -> None:
    assert "nude woman" in normalize("nuuuuude woman").word_views
    assert "porn" in normalize("p0000rn").word_views
    assert normalize("boobs seed").word_views == ("boobs seed",)  # double letters are spelling


def test_leetspeak_keeps_original_tokens() -> None:
    # "4k"/"3d" stay available in the plain view and in the embedding text
    n = normalize("4k 3d render")
    assert n.word_views[0] == "4k 3d render"
    assert n.semantic_text == "4k 3d render"


def test_chinese_separators_removed_only_around_lone_characters() -> None:
    assert "裸体女人" in normalize("裸 体 女 人").han_views
    assert "裸体写真" in normalize("裸.体.写.真").han_views
    assert "裸体" in normalize("裸-体").han_views
    assert normalize("理性，交流").han_views == ("理性,交流",)


def test_semantic_text_is_deobfuscated_and_keeps_clauses() -> None:
    assert normalize("n.u.d.e woman, on a bed. 4k").semantic_text == "nude woman, on a bed, 4k"
    assert normalize("裸 体 女 人，高清").semantic_text == "裸体女人, 高清"
    assert normalize("p0rn star").semantic_text == "porn star"


def test_normalize_is_fast_enough_for_long_prompts() -> None:
    long = "masterpiece, best quality, " * 200
    assert normalize(long).base.startswith("masterpiece")


HAN = re.compile(r"[\u3400-\u9fff]")


def _bundled_chinese_terms() -> list[str]:
    files = resources.files("huabu.filters").joinpath("data")
    out: list[str] = []
    for name in ("blocklist_zh.yaml", "blocklist_en.yaml"):
        data = yaml.safe_load(files.joinpath(name).read_text(encoding="utf-8"))
        texts = [json.dumps(data, ensure_ascii=False)]
        out.extend(t for t in re.findall(r"[\u3400-\u9fff]+", texts[0]))
    return out


def test_block_list_terms_are_written_in_simplified_chinese() -> None:
    # Prompts are mapped to simplified before matching, so a traditional character in a block list
    # could never match anything.
    for term in _bundled_chinese_terms():
        assert to_simplified(term) == term, term


def test_traditional_spelling_of_every_block_list_term_normalises_back() -> None:
    table = json.loads(resources.files("huabu.filters").joinpath("data/t2s.json").read_text(encoding="utf-8"))["map"]
    reverse = {s: t for t, s in table.items()}
    changed = 0
    for term in _bundled_chinese_terms():
        traditional = "".join(reverse.get(ch, ch) for ch in term)
        changed += traditional != term
        assert canonical(traditional) == term
    assert changed > 20  # the table covers the block lists' characters, not just a handful
