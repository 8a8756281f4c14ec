"""huabu.filters: the safety filters (plain Python; the Ray Serve deployments wrap them).

Prompt side: :class:`PromptFilter` (normalisation, block lists, semantic similarity). Image side:
:class:`ImageFilter` (open_nsfw). Both return :class:`Decision` objects, which never contain the
prompt text, and count them in a :class:`FilterCounters`. Models load when a filter is built, not
on import.
"""

from huabu.filters.counters import CounterSnapshot, FilterCounters
from huabu.filters.decision import Category, Decision, Stage
from huabu.filters.fingerprint import prompt_fingerprint
from huabu.filters.image import ImageFilter
from huabu.filters.normalize import NormalizedText, normalize
from huabu.filters.prompt_filter import PromptFilter
from huabu.filters.settings import ImageFilterSettings, PromptFilterSettings

__all__ = [
    "Category",
    "CounterSnapshot",
    "Decision",
    "FilterCounters",
    "ImageFilter",
    "ImageFilterSettings",
    "NormalizedText",
    "PromptFilter",
    "PromptFilterSettings",
    "Stage",
    "normalize",
    "prompt_fingerprint",
]
