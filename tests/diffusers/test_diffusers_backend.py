"""The diffusers backend in-process, on a tiny random Qwen-Image pipeline: the replica contract the own
MMDiT keeps (per-request generators, batching, progress, cancellation between steps, byte-exact
paste-back), its limits and defaults, LoRA versions, and references that cannot load."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from huabu.deployments.backends import requests as R
from huabu.deployments.backends.diffusers.backend import DiffusersBackend
from huabu.deployments.backends.diffusers.loading import ModelLoadError
from huabu.deployments.backends.loader import check_model, load_backend
from huabu.deployments.core.settings import LoraSettings, Settings, VariantSettings

SETTINGS = Settings()


def backend_for(tiny_qwen: Path, **variant: object) -> DiffusersBackend:
    loaded = load_backend(VariantSettings(model=f"diffusers:{tiny_qwen}", **variant), SETTINGS)
    assert isinstance(loaded, DiffusersBackend)
    return loaded


@pytest.fixture(scope="module")
def backend(tiny_qwen: Path) -> DiffusersBackend:
    return backend_for(tiny_qwen)


def generate(prompt: str, seed: int, steps: int = 4, size: int = 32, guidance: float = 4.0) -> R.SampleRequest:
    return R.generation(prompt, seed=seed, size=(size, size), steps=steps, guidance=guidance)


def test_one_load_serves_every_operation_from_shared_weights(backend: DiffusersBackend) -> None:
    pipelines = backend.pipelines
    assert type(pipelines.text_to_image).__name__ == "QwenImagePipeline"
    assert type(pipelines.inpaint).__name__ == "QwenImageInpaintPipeline"
    assert type(pipelines.img2img).__name__ == "QwenImageImg2ImgPipeline"
    for paired in (pipelines.inpaint, pipelines.img2img):
        for name in ("transformer", "vae", "text_encoder"):
            assert getattr(paired, name) is getattr(pipelines.text_to_image, name)  # not a second copy
    assert backend.describe() == {
        "backend": "diffusers",
        "pipeline": "QwenImagePipeline",
        "dtype": "float32",
        "reference": str(backend.pipelines.reference),
        "cpu_offload": False,
        "transformer": "diffusers",
    }


def test_limits_come_from_the_pipeline_and_the_variant_overrides_defaults(tiny_qwen: Path) -> None:
    limits = backend_for(tiny_qwen).limits
    # The tiny VAE downsamples 4x and the transformer packs 2x2 latents: sides are multiples of 8.
    assert limits.pixel_multiple == 8
    # QwenImagePipeline.__call__'s own defaults: 50 steps, true CFG 4.
    assert (limits.steps, limits.guidance) == (50, 4.0)
    assert limits.capabilities == ("generate", "inpaint", "img2img")
    lightning = backend_for(tiny_qwen, steps=8, guidance=1.0).limits  # a few-step distillation's settings
    assert (lightning.steps, lightning.guidance) == (8, 1.0)


def test_a_request_is_the_same_alone_and_in_a_batch(backend: DiffusersBackend) -> None:
    batch = [generate("a red circle", 1), generate("a cat sitting on a striped mat", 2), generate("a cat", 3)]
    together = backend(batch)
    for request, result in zip(batch, together, strict=True):
        (alone,) = backend([request])
        assert alone.pixels is not None and result.pixels is not None
        # On CPU in float32 (docs/MODELS.md): equal to within one level per channel.
        assert np.abs(alone.pixels.astype(int) - result.pixels.astype(int)).max() <= 1
    assert not np.array_equal(together[0].pixels, together[2].pixels)  # seeds and prompts matter
    (again,) = backend([batch[0]])
    assert np.array_equal(again.pixels, backend([batch[0]])[0].pixels)  # reproducible


def test_mixed_requests_split_into_compatible_calls(backend: DiffusersBackend) -> None:
    batch = [generate("a", 1, steps=3), generate("b", 2, steps=5), generate("c", 3, steps=3, size=16)]
    calls: list[tuple[tuple[int, ...], int, int]] = []
    results = backend(batch, on_step=lambda indices, step, total: calls.append((tuple(indices), step, total)))
    assert [r.pixels.shape for r in results if r.pixels is not None] == [(32, 32, 3), (32, 32, 3), (16, 16, 3)]
    assert {indices for indices, _, _ in calls} == {(0,), (1,), (2,)}
    assert [step for indices, step, _ in calls if indices == (1,)] == [1, 2, 3, 4, 5]


def test_progress_every_step_and_cancellation_between_steps(backend: DiffusersBackend) -> None:
    reported: list[int] = []
    results = backend(
        [generate("a slow one", 1, steps=20), generate("another", 2, steps=20)],
        on_step=lambda indices, step, total: reported.append(step),
        is_cancelled=lambda index: len(reported) >= 3,
    )
    assert reported == [1, 2, 3]  # the interrupt skips every later step
    assert all(r.cancelled and r.pixels is None for r in results)


def test_inpainting_keeps_every_pixel_outside_the_mask(backend: DiffusersBackend) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), dtype=bool)
    mask[5:19, 9:27] = True
    (result,) = backend([R.inpainting("a star", image, mask, seed=4, steps=4, guidance=4.0)])
    assert result.pixels is not None
    assert np.array_equal(result.pixels[~mask], image[~mask])
    assert (result.pixels[mask] != image[mask]).mean() > 0.5
    grown = R.outpainting("more sky", image, left=8, top=16, seed=5, steps=4, guidance=4.0)
    (outpainted,) = backend([grown])
    assert outpainted.pixels is not None and outpainted.pixels.shape == (48, 40, 3)
    assert np.array_equal(outpainted.pixels[16:, 8:], image)


def test_img2img_runs_the_last_part_of_the_schedule(backend: DiffusersBackend) -> None:
    image = np.full((32, 32, 3), 90, dtype=np.uint8)
    steps: list[tuple[int, int]] = []
    (result,) = backend(
        [R.img2img("brighter", image, strength=0.5, seed=1, steps=8, guidance=4.0)],
        on_step=lambda indices, step, total: steps.append((step, total)),
    )
    assert result.pixels is not None and steps == [(i, 4) for i in range(1, 5)]


def test_bad_requests_name_the_parameter(backend: DiffusersBackend) -> None:
    with pytest.raises(R.InvalidRequest) as info:
        backend([generate("x", 1, size=36)])
    assert info.value.param == "size" and "multiple of 8" in str(info.value)
    text_only = replace(backend.limits, capabilities=("generate",))
    mask = np.ones((32, 32), dtype=bool)
    with pytest.raises(R.InvalidRequest) as info:
        R.inpainting("x", np.zeros((32, 32, 3), np.uint8), mask, seed=1).validate(text_only)
    assert info.value.param == "mask" and "cannot inpaint" in str(info.value)


def test_lora_scale_is_part_of_the_version_and_changes_the_image(tiny_qwen: Path, tiny_lora: Path) -> None:
    plain = backend_for(tiny_qwen)
    half = backend_for(tiny_qwen, lora=[LoraSettings(path=str(tiny_lora), scale=0.5)])
    full = backend_for(tiny_qwen, lora=[LoraSettings(path=str(tiny_lora), scale=1.0)])
    assert len({plain.model_id, half.model_id, full.model_id}) == 3
    assert half.model_id.startswith(f"diffusers:{tiny_qwen}+lora-")
    request = [generate("a red circle", 1)]
    images = [b(request)[0].pixels for b in (plain, half, full)]
    assert all(image is not None for image in images)
    diff_half = np.abs(images[1].astype(int) - images[0].astype(int)).mean()  # type: ignore[union-attr]
    diff_full = np.abs(images[2].astype(int) - images[0].astype(int)).mean()  # type: ignore[union-attr]
    assert 0 < diff_half < diff_full


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("diffusers:", "names no pipeline"),
        ("diffusers:/nonexistent/qwen-image", "not a saved diffusers pipeline"),
        ("diffusers:not//a hub id", "neither a folder nor a valid hub id"),
        ("no-such-model@v9", "no checkpoint 'no-such-model@v9'"),
    ],
)
def test_unloadable_references_fail_with_a_message_naming_them(model: str, expected: str) -> None:
    with pytest.raises(Exception, match=expected):
        check_model(VariantSettings(model=model), SETTINGS)


def test_a_folder_that_is_no_pipeline_and_a_bad_lora_fail_to_load(tmp_path: Path, tiny_qwen: Path) -> None:
    (tmp_path / "model_index.json").write_text('{"_class_name": "NoSuchPipeline"}')
    with pytest.raises(ModelLoadError, match=f"cannot load 'diffusers:{tmp_path}'"):
        load_backend(VariantSettings(model=f"diffusers:{tmp_path}"), SETTINGS)
    with pytest.raises(ModelLoadError, match="cannot load LoRA"):
        backend_for(tiny_qwen, lora=[LoraSettings(path=str(tmp_path / "missing.safetensors"))])


@pytest.mark.parametrize("size", [48, 96])
def test_previews_of_the_x0_estimate_for_the_requests_that_ask(backend: DiffusersBackend, size: int) -> None:
    """#26: progress previews on the diffusers backend: at every k-th step (not the last) for the
    requests with ``preview_every``, thumbnails (at most 64 px a side) of the flow-matching x0
    estimate, converging to the image the request ends with."""
    watched = replace(generate("a red circle", 11, steps=8, size=size), preview_every=2)
    unwatched = generate("a blue square", 12, steps=8, size=size)
    previews: dict[tuple[int, int], np.ndarray] = {}
    order: list[str] = []

    def on_preview(index: int, step: int, pixels: np.ndarray) -> None:
        previews[index, step] = pixels
        order.append(f"preview {step}")

    results = backend(
        [watched, unwatched],
        on_step=lambda indices, step, total: order.append(f"step {step}"),
        on_preview=on_preview,
    )
    assert sorted(previews) == [(0, 2), (0, 4), (0, 6)]
    assert order.index("preview 4") < order.index("step 4")  # the step's progress event carries it
    final = results[0].pixels
    assert final is not None and final.shape == (size, size, 3)
    side = min(size, 64)
    for pixels in previews.values():
        assert pixels.dtype == np.uint8 and pixels.shape == (side, side, 3)
        assert pixels.std() > 0
    # Previews only read the latents: the same batch without them gives the same bytes.
    unobserved = backend([replace(watched, preview_every=0), unwatched])
    assert unobserved[0].pixels is not None and np.array_equal(unobserved[0].pixels, final)

    thumbnail = np.asarray(Image.fromarray(final).resize((side, side), Image.Resampling.BOX), dtype=float)

    def error(step: int) -> float:
        return float(np.abs(previews[0, step].astype(float) - thumbnail).mean())

    assert error(6) < error(2), [error(s) for s in (2, 4, 6)]
