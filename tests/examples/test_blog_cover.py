"""examples/blog_cover run as a user runs it (a subprocess) against a deployed application."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

pytestmark = [pytest.mark.serve, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "blog_cover"
ARTICLES = sorted((EXAMPLE / "articles").glob("*.md"))
_HAN = re.compile(r"[\u4e00-\u9fff]")


def run_example(app: Any, *args: str | Path) -> tuple[list[dict[str, Any]], str]:
    command = [sys.executable, str(EXAMPLE / "blog_cover.py"), *map(str, args)]
    command += ["--base-url", app.base_url, "--steps", "8", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout), done.stderr


def copy_articles(target: Path, names: list[str] | None = None) -> Path:
    target.mkdir(parents=True)
    for article in ARTICLES:
        if names is None or article.name in names:
            shutil.copy(article, target / article.name)
    return target


def front(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert isinstance(meta, dict)
    return meta


def test_covers_for_a_folder_of_chinese_and_english_articles(app: Any, tmp_path: Path) -> None:
    assert {a.name[:3] for a in ARTICLES} == {"zh-", "en-"}
    folder = copy_articles(tmp_path / "posts")
    covers = tmp_path / "covers"

    outcomes, stderr = run_example(app, folder, "--out", covers)
    assert "covers: 100%" in stderr  # the progress bar ran over the folder
    assert [Path(o["article"]).name for o in outcomes] == [a.name for a in ARTICLES]
    for outcome, source in zip(outcomes, ARTICLES, strict=True):
        assert outcome["status"] == "covered", outcome
        assert not outcome["cached"]
        zh = source.name.startswith("zh-")
        assert outcome["language"] == ("zh" if zh else "en")
        assert len(outcome["topics"]) == 3
        assert all(bool(_HAN.search(t)) == zh for t in outcome["topics"]), outcome["topics"]
        assert "no text" in outcome["prompt"] or "无文字" in outcome["prompt"]

        article = folder / source.name
        meta = front(article)
        assert meta["cover"] == outcome["cover"]
        assert meta["cover_alt"] == ", ".join(outcome["topics"])
        cover = (article.parent / meta["cover"]).resolve()
        assert cover.parent == covers.resolve()
        with Image.open(cover) as image:
            assert image.size == (64, 32)
        original = source.read_text(encoding="utf-8")
        if original.startswith("---\n"):  # the author's fields and the body are untouched
            assert {k: v for k, v in meta.items() if not k.startswith("cover")} == front(source)
            assert article.read_text(encoding="utf-8").split("---\n", 2)[2] == original.split("---\n", 2)[2]
        else:
            assert article.read_text(encoding="utf-8").endswith(original)
    assert "5 covered (0 from cache)" in stderr

    # Same topics again (another site's copy of the posts): every cover comes from the cache,
    # and content-addressed files are stored once.
    again, stderr = run_example(app, copy_articles(tmp_path / "mirror"), "--out", covers)
    assert all(o["status"] == "covered" and o["cached"] for o in again), again
    assert [o["cover"] for o in again] == [o["cover"] for o in outcomes]
    assert len(list(covers.iterdir())) == len({o["cover"] for o in outcomes})

    # Articles that have a cover are skipped unless --force.
    skipped, _ = run_example(app, folder, "--out", covers, "--no-progress")
    assert {o["status"] for o in skipped} == {"skipped"}


def test_covers_on_s3(app: Any, s3_endpoint: str, tmp_path: Path) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="blog-covers")
    folder = copy_articles(tmp_path / "posts", ["zh-huangshan-hiking.md", "en-gpu-autoscaling.md"])
    cdn = "https://cdn.blog.test/"
    outcomes, _ = run_example(
        app, folder, "--s3-bucket", "blog-covers", "--s3-endpoint-url", s3_endpoint, "--public-base-url", cdn
    )
    for outcome in outcomes:
        assert outcome["status"] == "covered", outcome
        assert outcome["cover"].startswith(cdn + "covers/cover-")
        assert front(Path(outcome["article"]))["cover"] == outcome["cover"]
        key = outcome["cover"].removeprefix(cdn)
        stored = s3.get_object(Bucket="blog-covers", Key=key)
        assert stored["ContentType"] == "image/png"
        assert stored["Body"].read().startswith(b"\x89PNG")

    # A missing bucket fails that article with a message naming the object, and the run exits 1.
    bad = copy_articles(tmp_path / "bad", ["en-sourdough-bread.md"])
    command = [sys.executable, str(EXAMPLE / "blog_cover.py"), str(bad), "--base-url", app.base_url]
    command += ["--steps", "8", "--s3-bucket", "no-such-bucket", "--s3-endpoint-url", s3_endpoint, "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1
    assert "s3://no-such-bucket/covers/" in done.stdout and "failed" in done.stdout
