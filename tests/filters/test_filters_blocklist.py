"""Block lists: each rule kind (terms, regex, all_of, unless, runs), categories, and file loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from huabu.filters.blocklist import BlockList, BlockListFile, load_blocklists
from huabu.filters.decision import Category
from huabu.filters.normalize import normalize


@pytest.fixture(scope="module")
def bundled() -> BlockList:
    return load_blocklists(["en", "zh"])


def rule_of(bl: BlockList, text: str) -> str | None:
    hit = bl.first_hit(normalize(text))
    return hit.rule_id if hit else None


def category_of(bl: BlockList, text: str) -> Category | None:
    hit = bl.first_hit(normalize(text))
    return hit.category if hit else None


def test_bundled_lists_load(bundled: BlockList) -> None:
    assert len(bundled) > 30
    assert bundled.names == ("en", "zh")
    assert len(set(bundled.rule_ids)) == len(bundled.rule_ids)
    cats = {category_of(bundled, t) for t in ["nude", "gore", "kkk", "suicide", "cocaine", "幼女裸体"]}
    assert cats == set(Category)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("a nude woman", "en.sexual.nudity"),
        ("NUDES", "en.sexual.nudity"),  # plural and case
        ("porn star", "en.sexual.porn"),
        ("p.o.r.n", "en.sexual.porn"),
        ("rule34 fan art", "en.sexual.porn"),  # optional space inside a term ("rule 34")
        ("self-harm", "en.self_harm.suicide"),
        ("selfharm", "en.self_harm.suicide"),
        ("裸体", "zh.sexual.nudity"),
        ("裸 體", "zh.sexual.nudity"),
    ],
)
def test_term_rules(bundled: BlockList, text: str, rule: str) -> None:
    assert rule_of(bundled, text) == rule


@pytest.mark.parametrize(
    "text",
    ["Essex countryside", "an antique sextant", "therapist office", "analysis chart", "Scunthorpe", "cockatoo",
     "shooting star", "kill the lights", "a can of coke", "weeds in the garden", "hand grenade perfume bottle"],
)  # fmt: skip
def test_latin_terms_match_whole_words_only(bundled: BlockList, text: str) -> None:
    assert rule_of(bundled, text) is None


@pytest.mark.parametrize(
    "text",
    ["naked mole rat", "the naked eye", "nude lipstick", "nude 色系 palette", "pussy willow", "summa cum laude",
     "Al Gore speech", "gore-tex jacket", "suicide prevention hotline", "Suicide Squad fan art", "sex education",
     "sex on the beach cocktail", "white power bank", "a chink in the armor", "跳楼价大甩卖", "赤裸裸的谎言",
     "南京大屠杀纪念馆", "血腥玛丽鸡尾酒", "自杀预防热线", "禁毒宣传：远离冰毒", "爬上吊床", "杀人游戏",
     "pink粉色连衣裙", "2018禁止吸烟海报"],
)  # fmt: skip
def test_unless_exceptions(bundled: BlockList, text: str) -> None:
    assert rule_of(bundled, text) is None


def test_unless_only_covers_its_own_span(bundled: BlockList) -> None:
    # the cocktail exception does not excuse another, explicit use in the same prompt
    assert rule_of(bundled, "couple having sex on the beach") == "en.sexual.sex"
    assert rule_of(bundled, "naked mole rat next to a naked woman") == "en.sexual.nudity"


@pytest.mark.parametrize(
    ("text", "blocked"),
    [("k粉", True), ("18禁漫画", True), ("性交场景", True), ("理性交流", False), ("个性交友平台", False),
     ("中性交换", False), ("上吊自杀", True), ("上吊", True), ("上吊灯", False), ("情色电影", True),
     ("异国风情色彩", False)],
)  # fmt: skip
def test_chinese_regex_rules_with_lookarounds(bundled: BlockList, text: str, blocked: bool) -> None:
    assert (rule_of(bundled, text) is not None) is blocked


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("spreading her legs on the bed", "en.sexual.phrases"),
        ("a severed head", "en.violence.injury"),
        ("kill all jews", "en.hate.dehumanising"),
        ("k1ll a11 jew5", "en.hate.dehumanising"),
        ("cutting her wrists", "en.self_harm.cutting"),
        ("how to make a pipe bomb", "en.illegal.explosives"),
        ("how to build a bomb", "en.illegal.how_to_make"),
        ("如何制作炸弹", "zh.illegal.how_to_make"),
        ("kill all 穆斯林", "zh.hate.dehumanising"),
    ],
)
def test_regex_rules(bundled: BlockList, text: str, rule: str) -> None:
    assert rule_of(bundled, text) == rule


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("naked child", Category.MINORS),  # sexual + minor: minors wins
        ("sexy 12 year old", Category.MINORS),
        ("sexy 25 year old", None),
        ("a child playing in the park", None),
        ("a sexy red car", None),
        ("loli hentai", Category.MINORS),
        ("lolita fashion dress", None),
        ("一个 nude 小女孩", Category.MINORS),  # English and Chinese term sets are merged
        ("萝莉 性感", Category.MINORS),
        ("萝莉风格插画", None),
        ("nazi propaganda poster", Category.HATE),
        ("world war two museum about nazi germany", None),
        ("纳粹宣传海报", Category.HATE),
    ],
)
def test_all_of_rules(bundled: BlockList, text: str, category: Category | None) -> None:
    assert category_of(bundled, text) == category


def test_runs_are_whole_words(bundled: BlockList) -> None:
    assert rule_of(bundled, "s e x") == "en.sexual.sex"
    assert rule_of(bundled, "i want s e x") == "en.sexual.sex"
    assert rule_of(bundled, "s e x y") is None  # "sexy" is not blocked on its own


def test_hits_lists_every_rule(bundled: BlockList) -> None:
    hits = bundled.hits(normalize("nude child, gore"))
    assert {h.category for h in hits} == {Category.SEXUAL, Category.MINORS, Category.VIOLENCE}
    assert category_of(bundled, "nude child, gore") is Category.MINORS


def test_category_selection() -> None:
    bl = load_blocklists(["en", "zh"], categories=[Category.SEXUAL])
    assert bl.first_hit(normalize("decapitated body")) is None
    assert bl.first_hit(normalize("nude")) is not None
    only_en = load_blocklists(["en"])
    assert only_en.first_hit(normalize("裸体")) is None


def test_custom_files_by_path(tmp_path: Path) -> None:
    spec = {
        "name": "custom",
        "term_sets": {"fruit": ["apple", "香蕉"], "colour": {"terms": ["red"], "unless": ["red (?:carpet)"]}},
        "rules": [
            {"id": "custom.term", "category": "illegal", "terms": ["zorblax"]},
            {"id": "custom.regex", "category": "hate", "regex": ["\\bfoo+bar\\b"]},
            {"id": "custom.combo", "category": "violence", "all_of": ["fruit", "colour"]},
            {"id": "custom.inline", "category": "sexual", "all_of": [["alpha"], ["beta"]]},
        ],
    }
    yml = tmp_path / "custom.yaml"
    yml.write_text(json.dumps(spec), encoding="utf-8")  # JSON is valid YAML
    js = tmp_path / "custom.json"
    js.write_text(json.dumps(spec), encoding="utf-8")
    for path in (yml, js):
        bl = load_blocklists([path])
        assert rule_of(bl, "Zorblaxes!") == "custom.term"
        assert rule_of(bl, "foooobar") == "custom.regex"
        assert rule_of(bl, "a red apple") == "custom.combo"
        assert rule_of(bl, "红 red 香蕉") == "custom.combo"
        assert bl.first_hit(normalize("an apple on the red carpet")) is None
        assert rule_of(bl, "beta then alpha") == "custom.inline"
        assert bl.first_hit(normalize("alpha")) is None


def test_invalid_files_are_rejected(tmp_path: Path) -> None:
    def rules(*r: dict[str, object]) -> BlockListFile:
        return BlockListFile.model_validate({"name": "x", "rules": list(r)})

    with pytest.raises(ValidationError):
        rules({"id": "a", "category": "sexual", "terms": ["x"], "regex": ["y"]})  # two kinds
    with pytest.raises(ValidationError):
        rules({"id": "a", "category": "nonsense", "terms": ["x"]})
    with pytest.raises(ValidationError):
        rules({"id": "a", "category": "sexual", "terms": []})
    with pytest.raises(ValueError, match="invalid regex"):
        BlockList([rules({"id": "a", "category": "sexual", "regex": ["("]})])
    with pytest.raises(ValueError, match="duplicate rule id"):
        BlockList(
            [rules({"id": "a", "category": "sexual", "terms": ["x"]}, {"id": "a", "category": "hate", "terms": ["y"]})]
        )
    with pytest.raises(ValueError, match="unknown term set"):
        BlockList([rules({"id": "a", "category": "sexual", "all_of": ["nope"]})])
    with pytest.raises(FileNotFoundError):
        load_blocklists(["no_such_list"])
