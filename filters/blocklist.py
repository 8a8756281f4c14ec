"""Block lists: term, regex and co-occurrence rules loaded from data files, matched on normalised views.

A block-list file (YAML or JSON, see ``filters/data/blocklist_en.yaml``) has ``rules`` and optional
``term_sets``. Each rule has an ``id``, a ``category`` and one of:

* ``terms``: words or phrases. Latin terms match whole words (an optional plural ``s``/``es`` is allowed,
  and a space or hyphen inside a term is optional: ``self harm`` also matches ``selfharm``); Chinese
  terms match as substrings.
* ``regex``: patterns, matched on the word views (or the Chinese views when a pattern contains Chinese,
  or as chosen by ``views``).
* ``all_of``: names of term sets (or inline lists) that must *all* match somewhere in the prompt, e.g.
  a word for a child together with a sexual word. This is how context-dependent words ("naked",
  "kid") are handled without blocking them on their own.

``unless`` lists regexes of benign uses: a hit is dropped when an ``unless`` match on the same view
covers it ("naked mole rat", "suicide prevention", "跳楼价"). ``unless_context`` names term sets (or
inline lists) of benign contexts that drop the rule when any of them occurs anywhere in the prompt
("88" with "piano keys", "intestines spilling" in a surgery or butchery scene).

Terms are normalised like prompts (:func:`huabu.filters.normalize.canonical`: case, accents,
look-alikes), so "hüllenlos" matches the prompt's "hullenlos" view; regexes are used as written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from huabu.filters.decision import CATEGORY_PRIORITY, Category
from huabu.filters.normalize import NormalizedText, canonical

__all__ = ["BlockHit", "BlockList", "BlockListFile", "RuleSpec", "load_blocklists"]

_HAN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_TERM_SEP_RE = re.compile(r"[^\w]+")
_REGEX_PREFIX = "re:"

ViewName = Literal["words", "han", "all"]


class TermSetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    terms: list[str]
    unless: list[str] = Field(default_factory=list)


class RuleSpec(BaseModel):
    """One rule of a block-list file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9_.\-]+$")
    category: Category
    terms: list[str] | None = None
    regex: list[str] | None = None
    all_of: list[str | list[str]] | None = None
    unless: list[str] = Field(default_factory=list)
    unless_context: list[str | list[str]] = Field(default_factory=list)
    views: ViewName | None = None
    description: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> RuleSpec:
        kinds = [k for k in (self.terms, self.regex, self.all_of) if k is not None]
        if len(kinds) != 1:
            raise ValueError(f"rule {self.id}: exactly one of terms, regex, all_of is required")
        if not kinds[0]:
            raise ValueError(f"rule {self.id}: empty {self.kind} list")
        return self

    @property
    def kind(self) -> str:
        return "terms" if self.terms is not None else "regex" if self.regex is not None else "all_of"


class BlockListFile(BaseModel):
    """The schema of a block-list data file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    term_sets: dict[str, list[str] | TermSetSpec] = Field(default_factory=dict)
    rules: list[RuleSpec]


@dataclass(frozen=True, slots=True)
class BlockHit:
    """A rule that matched. Holds no prompt text."""

    rule_id: str
    category: Category
    kind: str


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{where}: invalid regex {pattern!r}: {exc}") from exc


def _latin_term_pattern(term: str) -> str:
    parts = [re.escape(p) for p in _TERM_SEP_RE.split(term.casefold()) if p]
    return " ?".join(parts)


def _han_term_pattern(term: str) -> str:
    # Substring match, except that a Latin part must not continue a Latin word: "k粉" (ketamine) is
    # not in "pink粉色", "av女优" not in "java女优".
    term = term.casefold()
    pattern = re.escape(term)
    if term[0].isascii() and term[0].isalnum():
        pattern = "(?<![a-z0-9])" + pattern
    if term[-1].isascii() and term[-1].isalnum():
        pattern += "(?![a-z0-9])"
    return pattern


class _Matcher:
    """Terms and/or regexes with shared ``unless`` exceptions; true if any of them hits a view."""

    def __init__(self, entries: Iterable[str], unless: Iterable[str], where: str, views: ViewName | None) -> None:
        latin: list[str] = []
        han: list[str] = []
        self._word_res: list[re.Pattern[str]] = []
        self._han_res: list[re.Pattern[str]] = []
        for entry in entries:
            if entry.startswith(_REGEX_PREFIX):
                entry = entry[len(_REGEX_PREFIX) :]
                pattern = _compile(entry, where)
                target = views or ("han" if _HAN_RE.search(entry) else "words")
                if target in ("words", "all"):
                    self._word_res.append(pattern)
                if target in ("han", "all"):
                    self._han_res.append(pattern)
            elif _HAN_RE.search(entry := canonical(entry)):
                han.append(_han_term_pattern(entry))
            elif entry.strip():
                latin.append(_latin_term_pattern(entry))
        self._latin: re.Pattern[str] | None = None
        if latin:
            # Longest first so "porn star" is preferred over "porn" (matters only for span checks).
            body = "|".join(sorted(set(latin), key=len, reverse=True))
            self._latin = _compile(rf"(?<![a-z0-9])(?:{body})(?:e?s)?(?![a-z0-9])", where)
            self._latin_full = _compile(rf"(?:{body})(?:e?s)?", where)
            self._word_res.insert(0, self._latin)
        if han:
            self._han_res.insert(0, _compile("|".join(sorted(set(han), key=len, reverse=True)), where))
        self._unless = [_compile(u, f"{where} unless") for u in unless]

    def _covered(self, view: str, start: int, end: int) -> bool:
        for u in self._unless:
            for m in u.finditer(view):
                if m.start() <= start and m.end() >= end:
                    return True
        return False

    def _search(self, patterns: list[re.Pattern[str]], views: Sequence[str]) -> bool:
        for pattern in patterns:
            for view in views:
                for m in pattern.finditer(view):
                    if not self._unless or not self._covered(view, m.start(), m.end()):
                        return True
        return False

    def matches(self, text: NormalizedText) -> bool:
        if self._word_res and self._search(self._word_res, text.word_views):
            return True
        if self._han_res and self._search(self._han_res, text.han_views):
            return True
        # A spaced-out word ("s e x") must be the whole run, so "s e x y" does not read as "sex".
        return self._latin is not None and any(self._latin_full.fullmatch(run) for run in text.runs)


@dataclass(frozen=True, slots=True)
class _Rule:
    id: str
    category: Category
    kind: str
    matchers: tuple[_Matcher, ...]
    benign: tuple[_Matcher, ...] = ()

    def matches(self, text: NormalizedText) -> bool:
        return all(m.matches(text) for m in self.matchers) and not any(b.matches(text) for b in self.benign)


class BlockList:
    """Compiled rules of one or more block-list files. Immutable and thread-safe once built."""

    def __init__(self, files: Sequence[BlockListFile], categories: Iterable[Category] | None = None) -> None:
        enabled = set(categories) if categories is not None else set(Category)
        # Term sets are merged by name across files, so the English list's "minor" set also pairs with the
        # Chinese list's "suggestive" set in a mixed-language prompt.
        sets: dict[str, tuple[list[str], list[str]]] = {}
        for f in files:
            for name, ts in f.term_sets.items():
                terms, unless = (ts, []) if isinstance(ts, list) else (ts.terms, ts.unless)
                merged = sets.setdefault(name, ([], []))
                merged[0].extend(terms)
                merged[1].extend(unless)
        rules: list[_Rule] = []
        seen: set[str] = set()
        for f in files:
            for spec in f.rules:
                if spec.id in seen:
                    raise ValueError(f"duplicate rule id {spec.id!r} (block list {f.name!r})")
                seen.add(spec.id)
                if spec.category in enabled:
                    rules.append(self._build(f, spec, sets))
        self._rules = tuple(rules)
        self.names = tuple(f.name for f in files)

    @staticmethod
    def _build(f: BlockListFile, spec: RuleSpec, sets: dict[str, tuple[list[str], list[str]]]) -> _Rule:
        where = f"block list {f.name!r} rule {spec.id!r}"
        matchers: tuple[_Matcher, ...]
        if spec.terms is not None:
            matchers = (_Matcher(spec.terms, spec.unless, where, spec.views),)
        elif spec.regex is not None:
            matchers = (_Matcher([_REGEX_PREFIX + r for r in spec.regex], spec.unless, where, spec.views),)
        else:
            matchers = tuple(BlockList._refs(spec.all_of or (), spec.unless, where, spec.views, sets))
        benign = tuple(BlockList._refs(spec.unless_context, [], f"{where} unless_context", spec.views, sets))
        return _Rule(spec.id, spec.category, spec.kind, matchers, benign)

    @staticmethod
    def _refs(
        refs: Iterable[str | list[str]],
        unless: list[str],
        where: str,
        views: ViewName | None,
        sets: dict[str, tuple[list[str], list[str]]],
    ) -> list[_Matcher]:
        """One matcher per term-set name or inline list."""
        built: list[_Matcher] = []
        for ref in refs:
            if isinstance(ref, list):
                built.append(_Matcher(ref, unless, where, views))
                continue
            if ref not in sets:
                raise ValueError(f"{where}: unknown term set {ref!r}")
            terms, set_unless = sets[ref]
            built.append(_Matcher(terms, [*set_unless, *unless], f"{where} set {ref!r}", views))
        return built

    def __len__(self) -> int:
        return len(self._rules)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self._rules)

    def hits(self, text: NormalizedText) -> list[BlockHit]:
        """Every rule that matches, in file order."""
        return [BlockHit(r.id, r.category, r.kind) for r in self._rules if r.matches(text)]

    def first_hit(self, text: NormalizedText) -> BlockHit | None:
        """The hit to report: the most severe category (see CATEGORY_PRIORITY), then file order."""
        found = self.hits(text)
        if not found:
            return None
        return min(found, key=lambda h: CATEGORY_PRIORITY.index(h.category))


def _read(path_or_name: str | Path, prefix: str = "blocklist") -> BlockListFile:
    path = Path(path_or_name)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        raw = path.read_text(encoding="utf-8")
        suffix = path.suffix
    else:
        res = resources.files("huabu.filters").joinpath(f"data/{prefix}_{path_or_name}.yaml")
        if not res.is_file():
            raise FileNotFoundError(f"no bundled {prefix} file named {path_or_name!r}")
        raw = res.read_text(encoding="utf-8")
        suffix = ".yaml"
    try:
        return BlockListFile.model_validate(json.loads(raw) if suffix == ".json" else yaml.safe_load(raw))
    except (yaml.YAMLError, ValueError) as exc:  # name the file: it is what an operator must fix
        raise ValueError(f"{prefix} file {path_or_name}: {type(exc).__name__}: {exc}") from exc


def load_blocklists(
    names: Iterable[str | Path], categories: Iterable[Category] | None = None, *, prefix: str = "blocklist"
) -> BlockList:
    """Load bundled block lists by name (``"en"`` -> ``data/blocklist_en.yaml``; ``prefix="intent"``:
    ``data/intent_<name>.yaml``) or files by path, and compile them."""
    return BlockList([_read(n, prefix) for n in names], categories)
