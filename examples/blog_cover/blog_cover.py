"""Automatic blog covers: Markdown articles in, a generated cover in each article's front matter out.

    python examples/blog_cover/blog_cover.py examples/blog_cover/articles --out covers
    python examples/blog_cover/blog_cover.py posts/ --s3-bucket my-blog --public-base-url https://cdn.example.com

For every article (Chinese or English): extract its main topics offline, build a prompt in a fixed
house style, generate through the huabu SDK (unseeded, so the same topics give the same request and
the server's cache answers repeats), store the PNG locally or on S3, and set ``cover`` and
``cover_alt`` in the article's front matter. Articles that already have a cover are skipped unless
``--force``. The server comes from ``--base-url`` or ``HUABU_BASE_URL`` (``huabu up`` starts one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import front_matter
from stores import CoverStore, LocalStore, S3Store
from styles import STYLES, Style
from topics import extract_topics, language
from tqdm import tqdm

from huabu.sdk import (
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    AuthenticationError,
    HuabuError,
    PermissionDeniedError,
)
from huabu.sdk.types import parse_size

# Failures that every further article would repeat (no or a wrong API key, no server): stop at the first.
FATAL = (AuthenticationError, PermissionDeniedError, APIConnectionError)


@dataclass
class Outcome:
    article: str
    status: str  # "covered", "skipped" or "failed"
    language: str = ""
    topics: list[str] = field(default_factory=list)
    prompt: str = ""
    cached: bool = False
    prompt_truncated: bool = False
    cover: str = ""
    error: str = ""


@dataclass
class CoverRun:
    client: AsyncClient
    store: CoverStore
    style: Style
    size: str
    steps: int | None
    topics: int
    force: bool


def find_articles(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.md") if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise SystemExit(f"error: {path} is neither a Markdown file nor a folder")
    return found


async def cover_article(path: Path, job: CoverRun) -> Outcome:
    outcome = Outcome(article=str(path), status="failed")
    try:
        text = path.read_text(encoding="utf-8")
        article = front_matter.parse(text)
        if article.meta.get("cover") and not job.force:
            outcome.status, outcome.cover = "skipped", str(article.meta["cover"])
            return outcome
        source = f"{article.title}\n\n{article.body}"
        lang = language(source)
        outcome.language = lang
        outcome.topics = extract_topics(source, lang, job.topics)
        outcome.prompt = job.style.prompt(outcome.topics, lang)
        results = await job.client.images.generate(
            outcome.prompt, size=job.size, steps=job.steps, negative_prompt=job.style.negative_prompt(lang)
        )
        image = results[0]
        data = await image.aload()
        outcome.cached, outcome.prompt_truncated = image.cached, image.prompt_truncated
        outcome.cover = await asyncio.to_thread(job.store.put, data, path)
        updated = front_matter.with_fields(text, {"cover": outcome.cover, "cover_alt": ", ".join(outcome.topics)})
        path.write_text(updated, encoding="utf-8")
        outcome.status = "covered"
    except (HuabuError, front_matter.FrontMatterError, ValueError, OSError) as exc:
        if isinstance(exc, FATAL) and not isinstance(exc, APITimeoutError):
            raise  # every article would fail the same way: stop at the first (amain says why)
        outcome.error = f"{type(exc).__name__}: {exc}"
    return outcome


async def cover_all(articles: list[Path], job: CoverRun, concurrency: int, progress: bool) -> list[Outcome]:
    # Concurrent requests let the server batch them; the bar advances as each article finishes.
    gate = asyncio.Semaphore(concurrency)

    async def one(path: Path) -> Outcome:
        async with gate:
            return await cover_article(path, job)

    tasks = [asyncio.create_task(one(path)) for path in articles]
    try:
        with tqdm(total=len(tasks), unit="article", desc="covers", disable=not progress, file=sys.stderr) as bar:
            for task in asyncio.as_completed(tasks):
                outcome = await task
                bar.set_postfix_str(Path(outcome.article).name)
                bar.update()
    finally:
        for task in tasks:
            task.cancel()  # a no-op for finished ones; the rest stop after a fatal error
    return [task.result() for task in tasks]  # in article order


def build_store(args: argparse.Namespace) -> CoverStore:
    if args.s3_bucket:
        return S3Store(
            bucket=args.s3_bucket,
            prefix=args.s3_prefix,
            endpoint_url=args.s3_endpoint_url,
            public_base_url=args.public_base_url,
            region=args.s3_region,
        )
    return LocalStore(args.out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="Markdown files or folders (searched recursively)")
    parser.add_argument("--base-url", help="huabu server (default: HUABU_BASE_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="API key (default: HUABU_API_KEY)")
    parser.add_argument("--style", choices=sorted(STYLES), default="minimal", help="house style (default: minimal)")
    parser.add_argument("--size", default="64x32", help="cover size WIDTHxHEIGHT (default: 64x32)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the server's)")
    parser.add_argument("--topics", type=int, default=3, help="topics per article (default: 3)")
    parser.add_argument("--concurrency", type=int, default=4, help="articles in flight at once (default: 4)")
    parser.add_argument("--force", action="store_true", help="regenerate covers that already exist")
    parser.add_argument("--out", type=Path, default=Path("covers"), help="local folder for covers (default: covers)")
    parser.add_argument("--s3-bucket", help="store covers in this S3 bucket instead of --out")
    parser.add_argument("--s3-prefix", default="covers/", help="key prefix in the bucket (default: covers/)")
    parser.add_argument("--s3-endpoint-url", help="S3-compatible endpoint (MinIO, a local test server...)")
    parser.add_argument("--s3-region", help="bucket region (default: boto3's configuration)")
    parser.add_argument("--public-base-url", help="public URL of the bucket/prefix root (a CDN); else s3:// URIs")
    parser.add_argument("--json", action="store_true", help="print the outcomes as JSON on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.topics < 1 or args.concurrency < 1:
        parser.error("--topics and --concurrency must be at least 1")
    try:
        parse_size(args.size)
    except ValueError as exc:
        parser.error(f"--size: {exc}")
    return args


async def amain(args: argparse.Namespace) -> int:
    articles = find_articles(args.paths)
    if not articles:
        print("no Markdown articles found", file=sys.stderr)
        return 1
    try:
        async with AsyncClient(base_url=args.base_url, api_key=args.api_key) as client:
            store = build_store(args)
            job = CoverRun(client, store, STYLES[args.style], args.size, args.steps, args.topics, args.force)
            outcomes = await cover_all(articles, job, args.concurrency, progress=not args.no_progress)
    except FATAL as exc:
        print(f"blog_cover: stopped, no article can be covered: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(o) for o in outcomes], ensure_ascii=False, indent=2))
    else:
        for o in outcomes:
            if o.status == "skipped":
                detail = f"{o.cover} (already has a cover; --force regenerates it)"
            else:
                detail = o.error or f"{o.cover} ({'cached' if o.cached else 'new'}; {', '.join(o.topics)})"
            print(f"{o.status:8} {o.article}: {detail}")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("covered", "skipped", "failed")}
    cached = sum(o.cached for o in outcomes)
    print(
        f"{len(outcomes)} articles: {counts['covered']} covered ({cached} from cache), "
        f"{counts['skipped']} skipped, {counts['failed']} failed",
        file=sys.stderr,
    )
    return 1 if counts["failed"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
