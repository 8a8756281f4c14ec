"""A text-only diffusers pipeline (a tiny random PixArt-Sigma: diffusers pairs no inpainting or
image-to-image pipeline with it), in-process and through the whole deployed application: it generates
at the size asked for with progress and cancellation (through PixArt's older ``callback``), and an
edit or outpaint, direct or as a job, is a 400 naming the operation, refused before anything is
queued, after which the app keeps serving."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import decode_png, first_image, png_bytes, sse_events, wait_job
from tiny_pipelines import build_pixart_sigma

from huabu.deployments.backends import requests as R
from huabu.deployments.backends.diffusers.backend import DiffusersBackend
from huabu.deployments.backends.loader import load_backend
from huabu.deployments.core.settings import Settings, VariantSettings


@pytest.fixture(scope="module")
def tiny_pixart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pixart_sigma(tmp_path_factory.mktemp("tiny-pixart-sigma"))


@pytest.fixture(scope="module")
def backend(tiny_pixart: Path) -> DiffusersBackend:
    loaded = load_backend(VariantSettings(model=f"diffusers:{tiny_pixart}"), Settings())
    assert isinstance(loaded, DiffusersBackend)
    return loaded


@pytest.fixture(scope="module")
def pixart_app(deploy_app: Any, tiny_pixart: Path) -> Any:
    return deploy_app(variants={"stable": {"model": f"diffusers:{tiny_pixart}"}})


# --- in-process ---------------------------------------------------------------------------------


def test_limits_come_from_the_pipeline_and_only_generation_is_offered(backend: DiffusersBackend) -> None:
    assert backend.pipelines.inpaint is None and backend.pipelines.img2img is None
    limits = backend.limits
    assert limits.capabilities == ("generate",)
    # The VAE downsamples 8x and the transformer packs 2x2 latents: sides are multiples of 16.
    assert limits.pixel_multiple == 16
    # No ``default_sample_size`` on PixArt: the transformer's sample_size (4 latents) sets the default.
    assert limits.default_size == (32, 32)
    # PixArtSigmaPipeline.__call__'s own defaults: 20 steps, guidance_scale 4.5.
    assert (backend.guidance_parameter, limits.steps, limits.guidance) == ("guidance_scale", 20, 4.5)


def test_it_renders_the_size_asked_for_with_progress_and_cancellation(backend: DiffusersBackend) -> None:
    # The tiny transformer's sample_size is no trained bucket: with resolution binning on, PixArt
    # would refuse every size ("Invalid sample size"); a real one would render a bucket and resize.
    reported: list[tuple[int, int]] = []
    batch = [R.generation(p, seed=s, size=(32, 48), steps=4, guidance=4.5) for p, s in (("a cat", 1), ("a dog", 2))]
    results = backend(batch, on_step=lambda indices, step, total: reported.append((step, total)))
    assert [r.pixels.shape for r in results if r.pixels is not None] == [(32, 48, 3)] * 2
    assert not np.array_equal(results[0].pixels, results[1].pixels)
    assert reported == [(i, 4) for i in range(1, 5)]  # PixArt's legacy callback, every step

    steps: list[int] = []
    (cancelled,) = backend(
        [R.generation("a slow one", seed=3, size=(32, 32), steps=20, guidance=4.5)],
        on_step=lambda indices, step, total: steps.append(step),
        is_cancelled=lambda index: len(steps) >= 3,
    )
    assert cancelled.cancelled and cancelled.pixels is None and steps == [1, 2, 3]  # stopped between steps


def test_previews_through_the_legacy_callback_show_the_sample(backend: DiffusersBackend) -> None:
    """PixArt's DPM-Solver is no flow-matching scheduler: its previews decode the current sample
    (noisy at first), which ends as the image."""
    previews: dict[int, np.ndarray] = {}
    request = replace(R.generation("a cat", seed=5, size=(32, 48), steps=6, guidance=4.5), preview_every=2)
    (result,) = backend([request], on_preview=lambda index, step, pixels: previews.__setitem__(step, pixels))
    assert sorted(previews) == [2, 4] and all(p.shape == (32, 48, 3) and p.dtype == np.uint8 for p in previews.values())
    assert result.pixels is not None
    errors = [float(np.abs(previews[s].astype(float) - result.pixels.astype(float)).mean()) for s in (2, 4)]
    assert errors[1] < errors[0], errors


def test_edits_are_refused_naming_the_operation(backend: DiffusersBackend) -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(R.InvalidRequest) as info:
        backend([R.inpainting("x", image, np.ones((32, 32), bool), seed=1)])
    assert info.value.param == "mask" and "cannot inpaint (it can: generate)" in str(info.value)
    with pytest.raises(R.InvalidRequest) as info:
        backend([R.img2img("x", image, strength=0.5, seed=1)])
    assert info.value.param == "image" and "cannot img2img" in str(info.value)


# --- the deployed application -------------------------------------------------------------------


def b64_png(pixels: np.ndarray, mode: str | None = None) -> str:
    return base64.b64encode(png_bytes(pixels, mode)).decode()


def assert_refused(response: Any, operation: str, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error", error
    assert f"cannot {operation} (it can: generate)" in error["message"] and error["param"] == param, error


@pytest.mark.serve
def test_models_list_generation_only_and_the_pipeline(pixart_app: Any, tiny_pixart: Path) -> None:
    with pixart_app.client() as c:
        (model,) = c.get("/v1/models").json()["data"]
    assert model["id"] == f"diffusers:{tiny_pixart}"
    assert (model["backend"], model["pipeline"]) == ("diffusers", "PixArtSigmaPipeline")
    sampling = model["sampling"]
    assert sampling["operations"] == ["generate"]
    assert (sampling["size"], sampling["size_multiple"], sampling["guidance_scale"]) == ("32x32", 16, 4.5)


@pytest.mark.serve
def test_generation_is_the_size_asked_for(pixart_app: Any) -> None:
    with pixart_app.client() as c:
        wide = c.post("/v1/images/generations", json={"prompt": "a red circle", "size": "48x32", "seed": 3})
        default = c.post("/v1/images/generations", json={"prompt": "a red circle", "seed": 3})
        odd = c.post("/v1/images/generations", json={"prompt": "a red circle", "size": "40x40"})
    assert decode_png(first_image(wide)).shape == (32, 48, 3)
    assert decode_png(first_image(default)).shape == (32, 32, 3)
    assert odd.status_code == 400 and "multiple of 16" in odd.json()["error"]["message"], odd.text


@pytest.mark.serve
def test_edits_outpaint_and_edit_jobs_are_400_naming_the_operation(pixart_app: Any) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.full((32, 32, 4), 255, dtype=np.uint8)
    mask[8:24, 8:24, 3] = 0  # transparent = repaint
    files = {"image": ("i.png", png_bytes(image), "image/png"), "mask": ("m.png", png_bytes(mask, "RGBA"), "image/png")}
    with pixart_app.client() as c:
        assert_refused(c.post("/v1/images/edits", data={"prompt": "a star"}, files=files), "inpaint", "mask")
        plain = {"image": files["image"]}  # no mask: image-to-image
        assert_refused(c.post("/v1/images/edits", data={"prompt": "a star"}, files=plain), "img2img", "image")
        # Outpainting is inpainting a grown canvas ("inpaint" in /v1/models' operations).
        outpaint = {"prompt": "more sky", "image": b64_png(image), "right": 16}
        assert_refused(c.post("/v1/images/outpaint", json=outpaint), "inpaint", "mask")

        key = {"Idempotency-Key": "text-only-edit"}
        edit_job = {"kind": "edit", "prompt": "a star", "image": b64_png(image), "mask": b64_png(mask, "RGBA")}
        assert_refused(c.post("/v1/jobs", json=edit_job, headers=key), "inpaint", "mask")
        outpaint_job = {**outpaint, "kind": "outpaint"}
        assert_refused(c.post("/v1/jobs", json=outpaint_job, headers=key), "inpaint", "mask")

        # Nothing was queued under that key: reusing it creates a new job, a generation, which runs
        # with progress every step (the app keeps serving).
        submitted = c.post("/v1/jobs", json={"kind": "generate", "prompt": "a green square", "steps": 5}, headers=key)
        assert submitted.status_code == 202, submitted.text
        assert (submitted.json()["kind"], submitted.json()["status"]) == ("generate", "queued")
        job = wait_job(c, submitted.json()["id"])
        events = sse_events(c, job["id"])
        after = c.post("/v1/images/generations", json={"prompt": "still here", "size": "32x48"})
    assert job["status"] == "succeeded", job
    assert [(e["step"], e["total"]) for e in events if e["type"] == "progress"] == [(i, 5) for i in range(1, 6)]
    assert decode_png(first_image(after)).shape == (48, 32, 3)
