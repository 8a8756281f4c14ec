"""The OpenAI-compatible images API on the real Ray Serve application."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import numpy as np
import pytest
from helpers import decode_png, first_image, png_bytes

from huabu.deployments.backends.mmdit.png import read_png_parameters

pytestmark = pytest.mark.serve


def test_health_ready_models_and_request_ids(app) -> None:
    with app.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["models"] == ["tiny-mmdit@v1"]
        models = c.get("/v1/models", headers={"x-request-id": "req-mine"})
        # The model's own sampling statement, with the steps this test app's settings override.
        sampling = {
            "size": "32x32",
            "steps": 4,
            "guidance_scale": 5.0,
            "max_steps": 200,
            "max_side": 512,
            "size_multiple": 8,
            "min_side": 8,
            "max_prompt_bytes": 96,
            "operations": ["generate", "inpaint", "img2img"],
        }
        assert models.json() == {
            "object": "list",
            "data": [
                {
                    "id": "tiny-mmdit@v1",
                    "object": "model",
                    "created": 0,
                    "owned_by": "huabu",
                    "sampling": sampling,
                    "backend": "mmdit",
                    "pipeline": None,
                    "dtype": "float32",
                    "transformer": None,
                }
            ],
        }
        assert models.headers["x-request-id"] == "req-mine"
        assert c.get("/v1/nope").headers["x-request-id"]


def test_a_request_without_sampling_parameters_gets_the_models(app) -> None:
    """The bundled model recommends guidance 5 (its record; docs/MODEL.md): a request that names no
    guidance, such as every request of the official openai client, is sampled with it."""
    body = {"prompt": "a blue square at the top", "seed": 11, "cache": "bypass"}
    with app.client() as c:
        implicit = c.post("/v1/images/generations", json=body)
        explicit = c.post("/v1/images/generations", json={**body, "guidance_scale": 5.0, "steps": 4, "size": "32x32"})
        plain = c.post("/v1/images/generations", json={**body, "guidance_scale": 1.0})
    params = read_png_parameters(first_image(implicit))
    assert params["guidance_scale"] == "5.0" and params["steps"] == "4" and params["size"] == "32x32", params
    assert first_image(implicit) == first_image(explicit)
    assert first_image(implicit) != first_image(plain)


def test_generation_png_carries_parameters_and_is_deterministic(app) -> None:
    body = {
        "prompt": "左边有个 red circle",
        "size": "32x32",
        "seed": 5,
        "steps": 3,
        "negative_prompt": "blur",
        "guidance_scale": 2.0,
    }
    with app.client() as c:
        first = c.post("/v1/images/generations", json=body)
        again = first_image(c.post("/v1/images/generations", json=body))
    data = first.json()["data"][0]
    assert data["seed"] == 5 and data["model"] == "tiny-mmdit@v1" and data["variant"] == "stable"
    image = first_image(first)
    assert image == again
    params = read_png_parameters(image)
    assert params["prompt"] == "左边有个 red circle" and params["seed"] == "5" and params["steps"] == "3"
    assert params["model"] == "tiny-mmdit@v1" and params["size"] == "32x32" and params["negative_prompt"] == "blur"


def test_long_prompts_are_truncated_and_the_response_says_so(app) -> None:
    with app.client() as c:
        r = c.post("/v1/images/generations", json={"prompt": "红色圆形" * 40, "steps": 2, "seed": 1})
    assert r.status_code == 200 and r.json()["data"][0]["prompt_truncated"] is True


def test_url_results_are_signed_and_expire(app) -> None:
    with app.client() as c:
        r = c.post(
            "/v1/images/generations", json={"prompt": "blue square", "seed": 2, "n": 2, "response_format": "url"}
        )
        urls = [d["url"] for d in r.json()["data"]]
        assert len(set(urls)) == 2
        ok = httpx.get(urls[0])
        assert ok.status_code == 200 and ok.content.startswith(b"\x89PNG")
        parsed = urlparse(urls[0])
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        tampered = f"{parsed.scheme}://{parsed.netloc}{parsed.path}?" + urlencode({**query, "sig": "0" * 64})
        extended = f"{parsed.scheme}://{parsed.netloc}{parsed.path}?" + urlencode(
            {**query, "expires": int(query["expires"]) + 3600}
        )
        expired = f"{parsed.scheme}://{parsed.netloc}{parsed.path}?" + urlencode({**query, "expires": 1})
        for bad in (tampered, extended, expired):
            denied = httpx.get(bad)
            assert denied.status_code == 403 and denied.json()["error"]["type"] == "permission_error"
        assert c.get("/v1/files/..%2F..%2Fetc%2Fpasswd").status_code == 404
        assert c.get("/v1/files/" + "a" * 64 + ".png").status_code == 403  # unsigned: existence is not revealed


def test_inpaint_with_alpha_mask_keeps_unmasked_pixels(app) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.full((32, 32, 4), 255, dtype=np.uint8)
    mask[:, 16:, 3] = 0  # transparent = repaint (OpenAI's convention)
    with app.client() as c:
        r = c.post(
            "/v1/images/edits",
            data={"prompt": "a green square on the right", "seed": "3", "steps": "3"},
            files={"image": ("image.png", png_bytes(image)), "mask": ("mask.png", png_bytes(mask, "RGBA"))},
        )
    out = decode_png(first_image(r))
    assert np.array_equal(out[:, :16], image[:, :16])
    assert not np.array_equal(out[:, 16:], image[:, 16:])


def test_inpaint_with_black_white_mask_and_image_array_field(app) -> None:
    image = np.full((32, 32, 3), 120, dtype=np.uint8)
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 255  # white = repaint
    with app.client() as c:
        r = c.post(
            "/v1/images/edits",
            data={"prompt": "red circle", "seed": "4", "steps": "3"},
            files={"image[]": ("image.png", png_bytes(image)), "mask": ("mask.png", png_bytes(mask, "L"))},
        )
    out = decode_png(first_image(r))
    keep = np.ones((32, 32), bool)
    keep[8:24, 8:24] = False
    assert np.array_equal(out[keep], image[keep])


def test_outpaint_grows_the_canvas_and_keeps_the_original(app) -> None:
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    body = {
        "prompt": "a red circle on the left",
        "image": base64.b64encode(png_bytes(image)).decode(),
        "right": 16,
        "bottom": 8,
        "seed": 1,
        "steps": 3,
    }
    with app.client() as c:
        out = decode_png(first_image(c.post("/v1/images/outpaint", json=body)))
    assert out.shape == (40, 48, 3)
    assert np.array_equal(out[:32, :32], image)


def test_official_openai_client_works_unmodified(app) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)
    b64 = client.images.generate(prompt="a yellow triangle", size="32x32", response_format="b64_json")
    assert base64.b64decode(b64.data[0].b64_json or "").startswith(b"\x89PNG")
    url = client.images.generate(prompt="a yellow triangle", response_format="url", n=2)
    assert len(url.data) == 2 and httpx.get(url.data[0].url or "").status_code == 200
    image = np.full((32, 32, 3), 60, dtype=np.uint8)
    mask = np.zeros((32, 32, 4), dtype=np.uint8)  # fully transparent: repaint all
    edited = client.images.edit(
        image=("i.png", png_bytes(image), "image/png"),
        prompt="green",
        mask=("m.png", png_bytes(mask, "RGBA"), "image/png"),
        response_format="b64_json",
    )
    assert decode_png(base64.b64decode(edited.data[0].b64_json or "")).shape == (32, 32, 3)
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(prompt="x", size="33x32")
    assert info.value.body["param"] == "size" and "multiple of 8" in info.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.images.generate(prompt="x", model="dall-e-3")
