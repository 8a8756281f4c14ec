"""YAML front matter of Markdown articles: read it, and set fields without reformatting the rest.

Only the lines of the fields that change are rewritten, so an author's ordering, comments and
quoting survive. Values are written as double-quoted scalars (JSON strings are valid YAML).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

_OPEN = "---"
_CLOSE = ("---", "...")


class FrontMatterError(ValueError):
    pass


@dataclass
class Article:
    meta: dict[str, Any] = field(default_factory=dict)
    header: list[str] | None = None  # the front matter's lines (without the --- fences), None if absent
    body: str = ""

    @property
    def title(self) -> str:
        title = self.meta.get("title")
        if title:
            return str(title)
        heading = re.search(r"^#\s+(.+)$", self.body, re.MULTILINE)
        return heading.group(1).strip() if heading else ""


def parse(text: str) -> Article:
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != _OPEN:
        return Article(body=text)
    for end in range(1, len(lines)):
        if lines[end].strip() in _CLOSE:
            header = [line.rstrip("\r\n") for line in lines[1:end]]
            try:
                meta = yaml.safe_load("\n".join(header)) or {}
            except yaml.YAMLError as exc:
                raise FrontMatterError(f"front matter is not valid YAML: {exc}") from None
            if not isinstance(meta, dict):
                raise FrontMatterError("front matter must be a mapping of fields (key: value)")
            return Article(meta=meta, header=header, body="".join(lines[end + 1 :]))
    raise FrontMatterError("front matter opened with --- is never closed")


def _set(header: list[str], key: str, value: str) -> list[str]:
    line = f"{key}: {json.dumps(value, ensure_ascii=False)}"
    start = re.compile(rf"^{re.escape(key)}\s*:")
    out: list[str] = []
    replaced = False
    skipping = False
    for existing in header:
        if skipping and (existing.startswith((" ", "\t", "-")) or not existing.strip()):
            continue  # the old value's continuation lines (a block or a list)
        skipping = False
        if start.match(existing) and not replaced:
            out.append(line)
            replaced = skipping = True
        else:
            out.append(existing)
    if not replaced:
        out.append(line)
    return out


def with_fields(text: str, fields: dict[str, str]) -> str:
    """``text`` with the given top-level front matter fields set (front matter created if absent)."""
    article = parse(text)
    header = list(article.header or [])
    for key, value in fields.items():
        header = _set(header, key, value)
    body = article.body if article.header is not None else text
    return "\n".join([_OPEN, *header, _OPEN]) + "\n" + body
