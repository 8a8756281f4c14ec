"""PromptFilter: normalisation, block lists, the intent layer and the exemplar similarity, combined into
one :class:`Decision`.

Order matters for latency: the block lists and the intent lexicons (well under a millisecond) run
first, and only prompts they let through are embedded, in one batch; the intent classifier and the
exemplar similarity then share that one embedding (a 512x7 and a 512xN product). Nothing is skipped:
every allowed prompt went through every enabled stage. ``Decision.stage`` names the layer that decided
(blocklist, intent, semantic) and ``rule_id`` the rule (``intent.coded.1488``, ``intent.classifier.violence``).

Usage (a Ray Serve deployment wraps this; it is plain Python and thread-safe)::

    f = PromptFilter(PromptFilterSettings())
    f.warmup()
    d = f.check("a red circle on the left")            # Decision(allowed=True, ...)
    ds = f.check_many(batch_of_prompts)                 # one embedding call for the batch
    f.check("nsfw, nude", negative=True).allowed        # True: negative prompts are not screened
    f.counters.snapshot()                               # per rule / category counts for metrics
"""

from __future__ import annotations

from collections.abc import Sequence

from huabu.filters.blocklist import BlockList, load_blocklists
from huabu.filters.counters import FilterCounters
from huabu.filters.decision import Decision, Stage
from huabu.filters.fingerprint import prompt_fingerprint
from huabu.filters.intent import IntentClassifier, vetoes
from huabu.filters.normalize import normalize
from huabu.filters.semantic import SemanticMatcher, TextEncoder, load_exemplars
from huabu.filters.settings import PromptFilterSettings

__all__ = ["PromptFilter"]

# The embedding sees at most this much text (USE cost grows with length; the block lists see it all).
_MAX_EMBED_CHARS = 2000


class PromptFilter:
    """Screens prompts. Build once per replica (loads ~100 MB of embedding weights), then share."""

    def __init__(
        self,
        settings: PromptFilterSettings | None = None,
        *,
        counters: FilterCounters | None = None,
        encoder: TextEncoder | None = None,
    ) -> None:
        self.settings = settings or PromptFilterSettings()
        self.counters = counters if counters is not None else FilterCounters()
        cats = list(self.settings.categories) if self.settings.categories is not None else None
        self.blocklist: BlockList | None = (
            load_blocklists(self.settings.blocklists, cats) if self.settings.enable_blocklist else None
        )
        self.lexicon: BlockList | None = None
        self.intent: IntentClassifier | None = None
        if self.settings.enable_intent:
            self.lexicon = load_blocklists(self.settings.intent_lexicons, cats, prefix="intent")
            self.intent = IntentClassifier(
                self.settings.intent_classifier, frozenset(cats) if cats is not None else None
            )
        self.semantic: SemanticMatcher | None = None
        if self.settings.enable_semantic or self.intent is not None:  # the classifier needs the embedding
            self.semantic = SemanticMatcher(
                load_exemplars(self.settings.exemplars),
                threshold=self.settings.semantic_threshold,
                margin=self.settings.semantic_margin,
                clause_threshold=self.settings.semantic_clause_threshold,
                categories=cats,
                encoder=encoder or TextEncoder(self.settings.embedding_threads),
                cache_size=self.settings.embedding_cache_size,
                max_clauses=self.settings.max_clauses,
            )

    def warmup(self) -> None:
        """Run the slow first embedding now (weights are loaded lazily), not on the first request."""
        if self.semantic is not None:
            self.semantic.encoder.warmup()
        self.check_many(["warm up", "预热"], record=False)

    def check(self, prompt: str, *, negative: bool = False) -> Decision:
        """Decide on one prompt. ``negative=True`` marks a negative prompt (see :meth:`check_many`)."""
        return self.check_many([prompt], negative=negative)[0]

    def check_many(self, prompts: Sequence[str], *, negative: bool = False, record: bool = True) -> list[Decision]:
        """Decide on a batch of prompts, in order; the semantic stage embeds the batch in one call.

        ``negative=True``: the texts are negative prompts. People put "nsfw, nude" there on purpose to
        steer away from such content, so they are allowed without screening (``Stage.SKIPPED``) unless
        ``settings.screen_negative_prompts`` is set.
        """
        key = self.settings.fingerprint_key
        key_bytes = key.get_secret_value().encode() if key is not None else None
        fingerprints = [prompt_fingerprint(p, key=key_bytes) for p in prompts]
        if (negative and not self.settings.screen_negative_prompts) or (
            self.blocklist is None and self.lexicon is None and self.semantic is None
        ):
            decisions = [Decision(allowed=True, stage=Stage.SKIPPED, fingerprint=fp) for fp in fingerprints]
            if record:
                self.counters.record_many(decisions)
            return decisions

        results: list[Decision | None] = [None] * len(prompts)
        pending: list[int] = []
        semantic_texts: list[str] = []
        for i, prompt in enumerate(prompts):
            text = normalize(prompt)
            for stage, rules in ((Stage.BLOCKLIST, self.blocklist), (Stage.INTENT, self.lexicon)):
                hit = rules.first_hit(text) if rules is not None else None
                if hit is not None:
                    results[i] = Decision(
                        allowed=False,
                        stage=stage,
                        category=hit.category,
                        rule_id=hit.rule_id,
                        fingerprint=fingerprints[i],
                    )
                    break
            else:
                if self.semantic is not None:
                    pending.append(i)
                    semantic_texts.append(text.semantic_text[:_MAX_EMBED_CHARS])
                else:
                    last = Stage.INTENT if self.lexicon is not None else Stage.BLOCKLIST  # the last layer run
                    results[i] = Decision(allowed=True, stage=last, fingerprint=fingerprints[i])

        if self.semantic is not None and pending:
            embedded = self.semantic.embed_prompts(semantic_texts)
            intents = self.intent.classify(embedded.vectors[embedded.whole]) if self.intent is not None else None
            similar = self.semantic.score(embedded, len(pending)) if self.settings.enable_semantic else None
            for k, i in enumerate(pending):
                intent = intents[k] if intents is not None else None
                res = similar[k] if similar is not None else None
                if intent is not None and intent.flagged and intent.category is not None:
                    results[i] = Decision(
                        allowed=False,
                        stage=Stage.INTENT,
                        category=intent.category,
                        rule_id=f"intent.classifier.{intent.category.value}",
                        score=round(intent.probability, 4),
                        fingerprint=fingerprints[i],
                    )
                elif (
                    res is not None
                    and res.flagged
                    and intent is not None
                    and self.intent is not None
                    and vetoes(intent.safe_probability, res.excess, self.intent.veto_safe, self.intent.veto_margin)
                ):
                    # a marginal exemplar match the classifier is confident is safe: allowed, and the
                    # decision names the layer that overruled it
                    results[i] = Decision(
                        allowed=True,
                        stage=Stage.INTENT,
                        rule_id=f"intent.veto.semantic.{res.category.value}"
                        if res.category
                        else "intent.veto.semantic",
                        score=round(intent.safe_probability, 4),
                        fingerprint=fingerprints[i],
                    )
                elif res is not None:
                    results[i] = Decision(
                        allowed=not res.flagged,
                        stage=Stage.SEMANTIC,
                        category=res.category if res.flagged else None,
                        rule_id=f"semantic.{res.category.value}" if res.flagged and res.category else None,
                        score=round(res.score, 4),
                        fingerprint=fingerprints[i],
                    )
                else:
                    score = round(intent.probability, 4) if intent is not None else None
                    results[i] = Decision(allowed=True, stage=Stage.INTENT, score=score, fingerprint=fingerprints[i])

        decisions = [d for d in results if d is not None]
        if record:
            self.counters.record_many(decisions)
        return decisions

    def check_request(self, prompt: str, negative_prompt: str | None = None) -> Decision:
        """Decide on a request's prompt and, if settings say so, its negative prompt (first block wins)."""
        decision = self.check(prompt)
        if decision.allowed and negative_prompt and self.settings.screen_negative_prompts:
            return self.check(negative_prompt, negative=True)
        return decision
