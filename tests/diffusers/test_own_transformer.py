"""``model.transformer: own``: a diffusers Qwen-Image pipeline that keeps diffusers' text encoder, VAE and
scheduler but denoises with huabu's own MMDiT, converted from the same weights at load. On a tiny random
Qwen-Image in float32 on CPU, the same requests through both transformers (batch of 2, prompts of
different lengths so one is padded, a non-square size, true CFG with a blank negative prompt):

- the pipeline's float images agree to <= 1e-5 (measured 7.5e-7, latents 9.5e-7 on magnitude ~4);
- the served uint8 images are at most one level apart per channel (measured: one channel of one
  pixel differs by 1, where the float value sits on a rounding boundary; all else equal).

Progress and cancellation, LoRA, converted folders, the deployed app, and what refuses to load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import decode_png, first_image
from tiny_pipelines import build_pixart_sigma

from huabu.deployments.backends import requests as R
from huabu.deployments.backends.diffusers.backend import DiffusersBackend
from huabu.deployments.backends.diffusers.loading import ModelLoadError
from huabu.deployments.backends.diffusers.own_transformer import OwnQwenImageTransformer
from huabu.deployments.backends.loader import load_backend
from huabu.deployments.backends.mmdit import convert
from huabu.deployments.core.settings import LoraSettings, Settings

PROMPTS = ["a red circle", "a cat sitting on a striped mat under a tall green tree at night"]


def backend_for(model_dir: Path, transformer: str, **variant: Any) -> DiffusersBackend:
    """The variant picks its transformer over the opposite global default (the deployed-app test
    below covers the global ``model.transformer``)."""
    other = "own" if transformer == "diffusers" else "diffusers"
    variant = {"model": f"diffusers:{model_dir}", "transformer": transformer, **variant}
    settings = Settings(model={"transformer": other}, variants={"stable": variant})
    loaded = load_backend(settings.variants["stable"], settings)
    assert isinstance(loaded, DiffusersBackend)
    return loaded


@pytest.fixture(scope="module")
def theirs(tiny_qwen: Path) -> DiffusersBackend:
    return backend_for(tiny_qwen, "diffusers")


@pytest.fixture(scope="module")
def ours(tiny_qwen: Path) -> DiffusersBackend:
    return backend_for(tiny_qwen, "own")


def batch(steps: int = 4) -> list[R.SampleRequest]:
    return [R.generation(p, seed=s, size=(32, 48), steps=steps, guidance=4.0) for s, p in enumerate(PROMPTS, 1)]


def pipeline_images(backend: DiffusersBackend, output_type: str = "np") -> Any:
    """The pipeline's own float output for the batch (before the backend rounds to uint8)."""
    return backend.pipelines.text_to_image(
        prompt=PROMPTS,
        negative_prompt=[" ", " "],
        true_cfg_scale=4.0,
        height=32,
        width=48,
        num_inference_steps=4,
        generator=[torch.Generator().manual_seed(s) for s in (1, 2)],
        output_type=output_type,
    ).images


def max_level_difference(a: list[Any], b: list[Any]) -> int:
    return max(int(np.abs(x.pixels.astype(int) - y.pixels.astype(int)).max()) for x, y in zip(a, b, strict=True))


def test_the_own_transformer_replaces_diffusers_in_every_paired_pipeline(ours: DiffusersBackend) -> None:
    pipelines = ours.pipelines
    transformer = pipelines.text_to_image.transformer
    assert isinstance(transformer, OwnQwenImageTransformer)
    assert pipelines.inpaint.transformer is transformer and pipelines.img2img.transformer is transformer
    assert ours.describe()["transformer"] == "own"
    # What the pipelines read from it: the limits come out as with diffusers' transformer.
    assert (ours.limits.pixel_multiple, ours.limits.capabilities) == (8, ("generate", "inpaint", "img2img"))
    assert transformer.dtype == torch.float32 and transformer.config.guidance_embeds is False


def test_same_images_as_diffusers_within_the_parity_bound(theirs: DiffusersBackend, ours: DiffusersBackend) -> None:
    outputs: list[torch.Tensor] = []
    hook = ours.pipelines.text_to_image.transformer.register_forward_hook(lambda m, i, out: outputs.append(out[0]))
    try:
        latents = [pipeline_images(b, "latent") for b in (theirs, ours)]
    finally:
        hook.remove()
    # One call's padding: the short prompt is padded to the long one, so the mask path runs.
    assert max(o.abs().max().item() for o in outputs) > 0.5  # the transformer's output is a real signal
    assert (latents[0] - latents[1]).abs().max().item() <= 1e-5  # measured 9.5e-7
    floats = [pipeline_images(b) for b in (theirs, ours)]
    assert np.abs(floats[0] - floats[1]).max() <= 1e-5  # measured 7.5e-7

    served = [b(batch()) for b in (theirs, ours)]
    assert all(r.pixels is not None and r.pixels.shape == (32, 48, 3) for r in served[0] + served[1])
    assert max_level_difference(*served) <= 1  # measured: 1 (one channel of one pixel)
    assert not np.array_equal(served[1][0].pixels, served[1][1].pixels)  # prompts and seeds matter


def test_inpainting_through_the_own_transformer(theirs: DiffusersBackend, ours: DiffusersBackend) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), dtype=bool)
    mask[4:20, 8:28] = True
    request = [R.inpainting("a star", image, mask, seed=4, steps=4, guidance=4.0)]
    (theirs_result,), (ours_result,) = theirs(request), ours(request)
    assert ours_result.pixels is not None and np.array_equal(ours_result.pixels[~mask], image[~mask])
    assert max_level_difference([theirs_result], [ours_result]) <= 1


def test_progress_every_step_and_cancellation_between_steps(ours: DiffusersBackend) -> None:
    reported: list[tuple[int, int]] = []
    results = ours(batch(steps=5), on_step=lambda indices, step, total: reported.append((step, total)))
    assert reported == [(i, 5) for i in range(1, 6)] and all(r.pixels is not None for r in results)

    steps: list[int] = []
    results = ours(
        batch(steps=20),
        on_step=lambda indices, step, total: steps.append(step),
        is_cancelled=lambda index: len(steps) >= 3,
    )
    assert steps == [1, 2, 3] and all(r.cancelled and r.pixels is None for r in results)


def test_lora_and_a_converted_folder(tiny_qwen: Path, tiny_lora: Path, ours: DiffusersBackend, tmp_path: Path) -> None:
    lora = [LoraSettings(path=str(tiny_lora), scale=1.0)]
    with_lora = [backend_for(tiny_qwen, t, lora=lora)(batch()) for t in ("diffusers", "own")]
    assert max_level_difference(*with_lora) <= 1  # the LoRA-fused weights, converted in memory
    assert max_level_difference(with_lora[1], ours(batch())) > 1  # the adapter changes the image

    convert.diffusers_to_own(tiny_qwen, tmp_path / "own", max_shard_bytes=100_000)
    folder = backend_for(tiny_qwen, f"own:{tmp_path / 'own'}")
    assert folder.describe()["transformer"] == f"own:{tmp_path / 'own'}"
    converted, streamed = folder(batch()), ours(batch())
    for a, b in zip(converted, streamed, strict=True):
        assert np.array_equal(a.pixels, b.pixels)  # the same tensors, however they were loaded


def test_a_pipeline_that_is_not_qwen_image_is_refused_naming_the_setting(tmp_path: Path) -> None:
    pixart = build_pixart_sigma(tmp_path / "pixart")
    with pytest.raises(ModelLoadError, match=r"model\.transformer 'own' .* is a PixArtSigmaPipeline"):
        backend_for(pixart, "own")
    with pytest.raises(ValueError, match=r"model\.transformer"):
        Settings(model={"transformer": "mine"})


def test_each_variant_picks_its_transformer_and_serves_under_its_own_id() -> None:
    model = "diffusers:/models/qwen-image"
    variants = {
        "stable": {"model": model},  # model.transformer's
        "canary": {"model": model, "transformer": "diffusers"},
        "folder": {"model": model, "transformer": "own:/models/qwen-image-own"},
        "tiny": {"model": "tiny-mmdit@v1"},  # not a diffusers model: no transformer to pick
    }
    settings = Settings(model={"transformer": "own"}, variants=variants)
    v = settings.variants
    assert [v[n].transformer for n in variants] == ["own", "diffusers", "own:/models/qwen-image-own", None]
    # Same weights, another function within float tolerance: the ids (and cache keys) differ.
    assert v["stable"].model_id == f"{model}+own" and v["canary"].model_id == model
    assert v["folder"].model_id.startswith(f"{model}+own-")
    assert Settings.model_validate(settings.model_dump()).variants == v  # stable through a round trip
    with pytest.raises(ValueError, match=r"variants\.tiny\.transformer|transformer 'own' .* needs a diffusers:"):
        Settings(variants={"stable": {"model": model}, "tiny": {"model": "tiny-mmdit@v1", "transformer": "own"}})
    with pytest.raises(ValueError, match=r"variants\.stable\.transformer"):
        Settings(variants={"stable": {"model": model, "transformer": "mine"}})


def test_a_converted_folder_of_another_transformer_or_with_lora_is_refused(
    tiny_qwen: Path, tiny_lora: Path, tmp_path: Path
) -> None:
    from diffusers import QwenImageTransformer2DModel

    # The tiny pipeline's transformer but one block shallower: every tensor it has fits, one is missing.
    config = dict(QwenImageTransformer2DModel.load_config(tiny_qwen / "transformer"))
    QwenImageTransformer2DModel.from_config({**config, "num_layers": 1}).save_pretrained(tmp_path / "other")
    convert.diffusers_to_own(tmp_path / "other", tmp_path / "own")
    with pytest.raises(ModelLoadError, match=r"model\.transformer 'own:.*': .* depth is 1, the pipeline's is 2"):
        backend_for(tiny_qwen, f"own:{tmp_path / 'own'}")
    with pytest.raises(ModelLoadError, match=r"cannot take .* LoRA adapters"):
        backend_for(tiny_qwen, f"own:{tmp_path / 'own'}", lora=[LoraSettings(path=str(tiny_lora))])


@pytest.mark.serve
def test_the_deployed_app_serves_a_variant_on_the_own_transformer(
    deploy_app: Any, tiny_qwen: Path, ours: DiffusersBackend
) -> None:
    app = deploy_app(variants={"stable": {"model": f"diffusers:{tiny_qwen}"}}, model={"transformer": "own"})
    with app.client() as c:
        (model,) = c.get("/v1/models").json()["data"]
        body = {"prompt": PROMPTS[1], "size": "48x32", "seed": 7, "steps": 4, "guidance_scale": 4.0}
        served = decode_png(first_image(c.post("/v1/images/generations", json=body)))
    assert (model["backend"], model["pipeline"], model["transformer"]) == ("diffusers", "QwenImagePipeline", "own")
    (alone,) = ours([R.generation(PROMPTS[1], seed=7, size=(32, 48), steps=4, guidance=4.0)])
    assert alone.pixels is not None and np.array_equal(served, alone.pixels)
