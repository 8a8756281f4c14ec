"""The outcome of a safety check, shared by the prompt and the image filters.

A :class:`Decision` is safe to log, trace and return to the client: it carries the rule that fired and
a fingerprint of the input, never the input text itself (nor the matched words, which are part of it).
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CATEGORY_PRIORITY", "Category", "Decision", "Stage"]


class Category(str, Enum):
    """Policy categories. The value is what clients see in the ``content_policy_violation`` error."""

    SEXUAL = "sexual"
    MINORS = "minors"
    VIOLENCE = "violence"
    HATE = "hate"
    SELF_HARM = "self_harm"
    ILLEGAL = "illegal"


# When one prompt trips several categories, the most severe one is reported (a sexual prompt that
# mentions a child is a minors case first).
CATEGORY_PRIORITY: tuple[Category, ...] = (
    Category.MINORS,
    Category.SEXUAL,
    Category.SELF_HARM,
    Category.VIOLENCE,
    Category.HATE,
    Category.ILLEGAL,
)


class Stage(str, Enum):
    """Which check produced the decision."""

    BLOCKLIST = "blocklist"  # a term or regex rule matched
    INTENT = "intent"  # the intent layer: an idiom/emoji/coded-symbol lexicon or the intent classifier
    SEMANTIC = "semantic"  # similarity to unsafe exemplars (also the last stage of an allowed prompt)
    IMAGE = "image"  # the NSFW image classifier
    SKIPPED = "skipped"  # not screened (a negative prompt, or every check disabled)


class Decision(BaseModel):
    """Allowed or blocked, and why. ``category``/``rule_id`` are set when blocked; ``rule_id`` also names
    the veto that allowed a prompt another stage would have blocked (``intent.veto.semantic.<category>``).

    ``score`` is the semantic similarity of the closest unsafe exemplar (prompt side) or the NSFW
    probability (image side); ``None`` when the stage computes none (a block-list hit).
    ``fingerprint`` is :func:`huabu.filters.fingerprint.prompt_fingerprint` of the input, for logs.
    """

    model_config = ConfigDict(frozen=True)

    allowed: bool
    stage: Stage
    category: Category | None = None
    rule_id: str | None = None
    score: float | None = Field(default=None)
    fingerprint: str = ""

    @property
    def blocked(self) -> bool:
        return not self.allowed

    def error_body(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI-style error body for a blocked request (HTTP 400).

        Matches the SDK's contract (sdk/types.py ``ERROR_STATUS``/``ErrorBody``): ``type`` is
        ``content_policy_violation`` and ``code`` carries the category.
        """
        category = self.category.value if self.category else None
        subject = "image" if self.stage is Stage.IMAGE else "prompt"
        return {
            "error": {
                "message": f"The {subject} was rejected by the content policy (category: {category}).",
                "type": "content_policy_violation",
                "param": "prompt" if self.stage is not Stage.IMAGE else None,
                "code": category,
            }
        }
