"""The web playground, end to end: served by a deployed gateway, driven in headless Debian chromium.

Set ``HUABU_SCREENSHOT_DIR=docs`` to refresh the screenshots in the docs from a run.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

pytestmark = [pytest.mark.serve, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STEPS = 20  # enough for the trained checkpoint's shapes to show in the screenshots


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: run `make setup` (it installs it with apt)")
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root in CI, where chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def _png(data_url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :]))).convert("RGB")


def _screenshot(page: Any, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    target = os.environ.get("HUABU_SCREENSHOT_DIR")
    if target:
        shutil.copyfile(tmp_path / name, Path(target) / name)


def test_page_and_assets_are_served_by_the_gateway(app: Any) -> None:
    with app.client() as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        # Under a route prefix every relative URL in the page must resolve below it.
        assert f'<base href="/{app.name}/">' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        script = http.get("/playground/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert http.get("/playground/style.css").headers["content-type"].startswith("text/css")
        missing = http.get("/playground/secrets.txt")
        assert missing.status_code == 404
        assert "no playground asset" in missing.json()["error"]["message"]


def _wait_idle(page: Any, count: int) -> None:
    page.wait_for_function(
        "n => document.body.dataset.busy === 'false' && document.querySelectorAll('#gallery li').length >= n",
        arg=count,
        timeout=120_000,
    )


def test_generate_inpaint_outpaint_in_the_browser(app: Any, browser: Any, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))

    page.goto(f"{app.base_url}/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#model option").count() >= 2  # "default" plus the served models

    # --- text to image with live progress over the WebSocket ---------------------------------
    page.fill("#prompt", "a big red circle in the center")
    page.select_option("#size", "32x32")
    page.fill("#seed", "7")
    page.fill("#steps", str(STEPS))
    page.click("#generate")
    _wait_idle(page, 1)
    assert page.inner_text("#status") == "generate done", page.inner_text("#status")
    assert page.inner_text("#result-cached") == "no"
    assert page.inner_text("#result-variant") == "stable"
    assert page.inner_text("#result-seed") == "7"
    assert page.inner_text("#result-size") == "32×32"
    progress = page.locator("#progress")
    assert progress.get_attribute("data-step") == progress.get_attribute("data-total") == str(STEPS)
    assert int(page.evaluate("document.body.dataset.wsEvents")) >= STEPS  # one per denoising step
    original = _png(page.get_attribute("#result-image", "src"))
    assert original.size == (32, 32)

    # The same request again comes from the cache, and the page says so.
    page.click("#generate")
    _wait_idle(page, 2)
    assert page.inner_text("#result-cached") == "yes"
    assert page.locator("#gallery li").first.get_attribute("data-cached") == "yes"
    assert _png(page.get_attribute("#result-image", "src")).tobytes() == original.tobytes()
    _screenshot(page, tmp_path, "playground.png")

    # --- inpainting with a brush-painted mask: a stroke across the middle rows --------------
    page.fill("#seed", "")
    page.fill("#inpaint-prompt", "a blue square in the center")
    box = page.locator("#mask-canvas").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 4, y)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(box["x"] + 4 + (box["width"] - 8) * i / 10, y)
    page.mouse.up()
    assert page.get_attribute("#mask-canvas", "data-painted") == "true"
    _screenshot(page, tmp_path, "playground-mask.png")
    page.click("#inpaint")
    _wait_idle(page, 3)
    assert page.locator("#gallery li").first.get_attribute("data-kind") == "edit", page.inner_text("#status")
    edited = _png(page.get_attribute("#result-image", "src"))
    assert edited.size == (32, 32)
    # Pixels far from the stroke are kept exactly; the painted band is repainted.
    assert edited.crop((0, 0, 32, 8)).tobytes() == original.crop((0, 0, 32, 8)).tobytes()
    assert edited.crop((0, 24, 32, 32)).tobytes() == original.crop((0, 24, 32, 32)).tobytes()
    assert edited.crop((0, 14, 32, 18)).tobytes() != original.crop((0, 14, 32, 18)).tobytes()

    # --- outpainting to the right ------------------------------------------------------------
    page.select_option("#outpaint-direction", "right")
    page.fill("#outpaint-pixels", "16")
    page.fill("#outpaint-prompt", "a big green triangle on the right")
    page.click("#outpaint")
    _wait_idle(page, 4)
    assert page.locator("#gallery li").first.get_attribute("data-kind") == "outpaint", page.inner_text("#status")
    assert page.inner_text("#result-size") == "48×32"
    wider = _png(page.get_attribute("#result-image", "src"))
    assert wider.crop((0, 0, 32, 32)).tobytes() == edited.tobytes()  # the source is kept, pixel for pixel
    _screenshot(page, tmp_path, "playground-edit.png")

    # --- a bad request shows the server's 4xx message ----------------------------------------
    page.evaluate("document.getElementById('steps').removeAttribute('max')")
    page.fill("#steps", "500")
    page.click("#generate")
    page.wait_for_selector("#status.error")
    assert "steps" in page.inner_text("#status")
    assert page.locator("#gallery li").count() == 4

    # --- the API key goes out as a Bearer token ----------------------------------------------
    with page.expect_request(lambda r: r.url.endswith("/v1/models")) as listed:
        page.fill("#api-key", "sk-playground-test")
        page.dispatch_event("#api-key", "change")
    assert listed.value.headers.get("authorization") == "Bearer sk-playground-test"

    origin = httpx.URL(app.base_url)
    foreign = [u for u in urls if not u.startswith("data:") and httpx.URL(u).host != origin.host]
    assert not foreign, f"the page loaded something from elsewhere: {foreign}"
    assert not page_errors
    page.close()


def test_playground_with_api_keys_on(deploy_app: Any, browser: Any) -> None:
    from huabu.deployments.gateway.auth import key_hash, new_key

    admin = new_key()[1]
    secured = deploy_app(lifetime="test", auth={"enabled": True, "admin_key_sha256": key_hash(admin)})
    created = httpx.post(
        f"{secured.base_url}/v1/admin/keys",
        json={"name": "playground"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=60,
    )
    assert created.status_code == 201, created.text
    page = browser.new_page()
    page.goto(f"{secured.base_url}/")  # the page itself is open; the API is not
    page.wait_for_selector("#status.error")
    assert "no API key" in page.inner_text("#status")

    page.fill("#api-key", created.json()["key"])
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#prompt", "一只在雪地里的红狐狸")
    page.fill("#steps", str(STEPS))
    page.click("#generate")
    _wait_idle(page, 1)
    assert page.inner_text("#status") == "generate done", page.inner_text("#status")
    assert page.inner_text("#result-variant") == "stable"
    # Browsers cannot put the key in a WebSocket header: it travels as the offered subprotocol,
    # so live progress arrives over the socket (not by polling).
    assert page.locator("#progress").get_attribute("data-step") == str(STEPS)
    assert int(page.evaluate("document.body.dataset.wsEvents || '0'")) >= STEPS
    page.close()


def test_the_browser_decodes_the_servers_pngs(browser: Any) -> None:
    """Chromium's own PNG decoder reads our encoder's files pixel for pixel: several deflate slices,
    all three row filters, the text chunks (Pillow and zlib check them in tests/mmdit/test_png.py)."""
    import numpy as np

    from huabu.deployments.backends.mmdit.png import encode_png, filtered_rows

    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:120, 0:1031]
    smooth = np.stack([(x * 0.7) % 256, (y * 2) % 256, (x + y) % 256], -1).astype(np.uint8)
    pixels = np.concatenate([smooth, rng.integers(0, 256, (120, 1031, 3), dtype=np.uint8)])
    assert set(filtered_rows(pixels)[:, 0]) == {0, 1, 2}
    data_url = "data:image/png;base64," + base64.b64encode(encode_png(pixels, {"prompt": "红色圆形"})).decode()
    page = browser.new_page()
    rgba = page.evaluate(
        """async (src) => {
            const image = new Image();
            image.src = src;
            await image.decode();
            const canvas = document.createElement("canvas");
            canvas.width = image.naturalWidth;
            canvas.height = image.naturalHeight;
            const context = canvas.getContext("2d");
            context.drawImage(image, 0, 0);
            return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data);
        }""",
        data_url,
    )
    page.close()
    decoded = np.array(rgba, dtype=np.uint8).reshape(240, 1031, 4)
    assert np.array_equal(decoded[..., :3], pixels) and (decoded[..., 3] == 255).all()
