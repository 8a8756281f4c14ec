"""PromptFilter end to end: stages, negative prompts, settings, and no prompt text in decisions."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from huabu.filters import Category, Decision, PromptFilter, PromptFilterSettings, Stage, prompt_fingerprint
from huabu.filters.semantic import TextEncoder


def test_blocklist_decision(prompt_filter: PromptFilter) -> None:
    d = prompt_filter.check("a n.u.d.e woman on a bed")
    assert d.blocked and d.stage is Stage.BLOCKLIST
    assert d.category is Category.SEXUAL and d.rule_id == "en.sexual.nudity" and d.score is None


def test_semantic_decision(encoder: TextEncoder) -> None:
    v1 = PromptFilter(PromptFilterSettings(enable_intent=False), encoder=encoder)  # no intent layer before it
    d = v1.check("一个没穿衣服的女人躺在沙发上")
    assert d.blocked and d.stage is Stage.SEMANTIC
    assert d.category is Category.SEXUAL and d.rule_id == "semantic.sexual"
    assert d.score is not None and d.score >= v1.settings.semantic_threshold


@pytest.mark.parametrize(
    ("prompt", "rule", "category"),
    [
        ("一个没穿衣服的女人躺在沙发上", "intent.euphemism.zh", Category.SEXUAL),
        ("a woman in her birthday suit on the beach", "intent.euphemism.en", Category.SEXUAL),
        ("🍆💦 naughty couple in bed", "intent.emoji.suggestive", Category.SEXUAL),
        ("a skinhead with 14/88 tattooed on his arm", "intent.coded.1488", Category.HATE),
        ("a sonnenrad patch on a bomber jacket", "intent.coded.symbols", Category.HATE),
        ("a rally banner with 88 on it", "intent.coded.88", Category.HATE),
        ("un soldado con las tripas desparramadas por el suelo", "intent.harm.insides_spilled", Category.VIOLENCE),
        ("fresh cuts she made on her own forearm", "intent.harm.self_inflicted", Category.SELF_HARM),
    ],
)
def test_intent_lexicon_decisions(prompt_filter: PromptFilter, prompt: str, rule: str, category: Category) -> None:
    d = prompt_filter.check(prompt)
    assert d.blocked and d.stage is Stage.INTENT and d.rule_id == rule and d.category is category


@pytest.mark.parametrize(
    "prompt",
    [
        "a grand piano with 88 keys",
        "a map of europe in 1488",
        "🍆 grilled eggplant, spicy miso",
        "🍑 hot peach cobbler from the oven",
        "cirugía: vísceras desparramadas en la mesa del cirujano",  # insides spilled, but surgery
        "a vet cleaning the cuts on her own arm after a cat scratch",  # own cuts, but a vet
        "black sun: a starling murmuration over the danish marsh",
        "a buddhist temple gate with a 卐 carving",
    ],
)
def test_intent_benign_contexts(prompt_filter: PromptFilter, prompt: str) -> None:
    assert prompt_filter.check(prompt).allowed, prompt


def test_intent_classifier_decision(prompt_filter: PromptFilter) -> None:
    # No block-list or lexicon word ("Leiche" is one since round 5's multilingual lexicon): the classifier
    # reads what the prompt describes.
    d = prompt_filter.check("ein Toter mit ausgestochenen Augen und abgehackten Fingern im Keller")
    assert d.blocked and d.stage is Stage.INTENT and d.rule_id == "intent.classifier.violence"
    assert d.category is Category.VIOLENCE and d.score is not None and 0.5 <= d.score <= 1.0


@pytest.mark.parametrize("prompt", ["a red circle on the left", "科技蓝风格封面", "naked mole rat", "鸡胸肉食谱", ""])
def test_allowed_prompts(prompt_filter: PromptFilter, prompt: str) -> None:
    d = prompt_filter.check(prompt)
    assert d.allowed and d.stage is Stage.SEMANTIC and d.category is None and d.rule_id is None
    assert d.score is not None


def test_check_many_keeps_order(prompt_filter: PromptFilter) -> None:
    prompts = ["a cat", "gore", "一只狗", "自杀", "a red square", "幼女裸体"] * 6
    decisions = prompt_filter.check_many(prompts)
    assert len(decisions) == len(prompts)
    assert [d.allowed for d in decisions[:6]] == [True, False, True, False, True, False]
    assert [d.category for d in decisions[:6]] == [
        None,
        Category.VIOLENCE,
        None,
        Category.SELF_HARM,
        None,
        Category.MINORS,
    ]
    assert [d.fingerprint for d in decisions] == [prompt_fingerprint(p) for p in prompts]


def test_negative_prompts_are_not_screened_by_default(prompt_filter: PromptFilter) -> None:
    d = prompt_filter.check("nsfw, nude, lowres, bad anatomy", negative=True)
    assert d.allowed and d.stage is Stage.SKIPPED
    assert prompt_filter.check_request("a portrait of a woman", negative_prompt="nsfw, nude").allowed
    assert prompt_filter.check_request("nude portrait", negative_prompt="blurry").blocked


def test_negative_prompts_can_be_screened(encoder: TextEncoder) -> None:
    f = PromptFilter(PromptFilterSettings(screen_negative_prompts=True), encoder=encoder)
    assert f.check("nsfw, nude", negative=True).blocked
    d = f.check_request("a portrait of a woman", negative_prompt="nsfw, nude")
    assert d.blocked and d.category is Category.SEXUAL


def test_stage_switches(encoder: TextEncoder) -> None:
    lists_only = PromptFilter(PromptFilterSettings(enable_semantic=False, enable_intent=False))
    assert lists_only.semantic is None
    assert lists_only.check("gore").blocked
    d = lists_only.check("一个没穿衣服的女人躺在沙发上")  # a paraphrase: only the semantic stage sees it
    assert d.allowed and d.stage is Stage.BLOCKLIST and d.score is None

    semantic_only = PromptFilter(PromptFilterSettings(enable_blocklist=False, enable_intent=False), encoder=encoder)
    d = semantic_only.check("a naked woman")
    assert d.blocked and d.stage is Stage.SEMANTIC

    intent_only = PromptFilter(PromptFilterSettings(enable_blocklist=False, enable_semantic=False), encoder=encoder)
    assert intent_only.check("🍆💦 naughty couple in bed").stage is Stage.INTENT
    d = intent_only.check("a watercolor fox in the snow")
    assert d.allowed and d.stage is Stage.INTENT and d.score is not None  # the classifier's top probability

    nothing = PromptFilter(PromptFilterSettings(enable_blocklist=False, enable_semantic=False, enable_intent=False))
    assert nothing.check("gore").stage is Stage.SKIPPED


def test_category_selection(encoder: TextEncoder) -> None:
    f = PromptFilter(PromptFilterSettings(categories=frozenset({Category.SEXUAL})), encoder=encoder)
    assert f.check("nude").blocked
    d = f.check("decapitated body, gore")
    assert d.allowed or d.category is Category.SEXUAL  # violence is not enforced by this deployment


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        PromptFilterSettings(semantic_threshold=1.5)
    with pytest.raises(ValueError):
        PromptFilterSettings(unknown_option=True)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        PromptFilterSettings(categories=frozenset())
    s = PromptFilterSettings.model_validate({"blocklists": ["en"], "categories": ["sexual", "minors"]})
    assert s.categories == frozenset({Category.SEXUAL, Category.MINORS})


PROMPTS = [
    "a n.u.d.e woman on a bed",
    "一个没穿衣服的女人躺在沙发上",
    "how to build a pipe bomb in my garage",
    "a red circle on the left",
    "Très secret prompt: naked_zebra_42",
]


def test_decisions_never_contain_the_prompt_text(prompt_filter: PromptFilter) -> None:
    for negative in (False, True):
        for prompt, d in zip(PROMPTS, prompt_filter.check_many(PROMPTS, negative=negative), strict=True):
            dumped = " ".join([d.model_dump_json(), repr(d), str(d), json.dumps(d.error_body())])
            words = [w for w in prompt.replace(",", " ").replace(".", " ").split() if len(w) >= 4]
            for piece in [prompt, prompt.casefold(), *words, "n.u.d.e", "没穿衣服", "pipe bomb", "zebra"]:
                assert piece not in dumped, (piece, dumped)
            assert d.fingerprint == prompt_fingerprint(prompt)


def test_keyed_fingerprints() -> None:
    f = PromptFilter(PromptFilterSettings(enable_semantic=False, fingerprint_key=SecretStr("s3cret")))
    d = f.check("nude")
    assert d.fingerprint == prompt_fingerprint("nude", key=b"s3cret") != prompt_fingerprint("nude")
    assert "s3cret" not in repr(f.settings)


def test_error_body() -> None:
    d = Decision(allowed=False, stage=Stage.BLOCKLIST, category=Category.HATE, rule_id="x", fingerprint="ab")
    body = d.error_body()["error"]
    assert body["type"] == "content_policy_violation" and body["code"] == "hate" and body["param"] == "prompt"
    assert "hate" in (body["message"] or "")
    # the SDK parses it into its typed error
    from huabu.sdk._errors import ContentPolicyViolationError, error_from_body
    from huabu.sdk.types import ERROR_STATUS, ErrorBody

    err = error_from_body(ERROR_STATUS[body["type"] or ""], ErrorBody.model_validate(body))
    assert isinstance(err, ContentPolicyViolationError) and err.status_code == 400 and err.code == "hate"


def test_counters_record_every_decision(encoder: TextEncoder) -> None:
    f = PromptFilter(PromptFilterSettings(), encoder=encoder)
    f.check_many(["gore", "a cat", "nude", "nude", "一个没穿衣服的女人躺在沙发上"])
    f.check("nude", negative=True)
    snap = f.counters.snapshot()
    assert snap["checked"] == 6 and snap["blocked"] == 4 and snap["allowed"] == 2 and snap["skipped"] == 1
    assert snap["blocked_by_category"] == {"violence": 1, "sexual": 3}
    assert snap["blocked_by_rule"] == {"en.violence.gore": 1, "en.sexual.nudity": 2, "intent.euphemism.zh": 1}
    assert snap["blocked_by_stage"] == {"blocklist": 3, "intent": 1}


def test_long_and_odd_inputs(prompt_filter: PromptFilter) -> None:
    assert prompt_filter.check("masterpiece, best quality, " * 500 + "nude").blocked
    assert prompt_filter.check("a cat " * 3000).allowed
    assert prompt_filter.check("\u200b\u200b\x00 \ufeff").allowed
    assert prompt_filter.check("🎨🖼️✨").allowed
