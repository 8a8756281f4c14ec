"""Every public method of both clients, with assertions that hold for the fake and for a real server.

Runs against the in-process fake by default; set ``HUABU_TEST_BASE_URL`` to run it against a server
(``conftest.backend``). Keep assertions to what the wire contract promises.
"""

from __future__ import annotations

import pytest
from sdk_fakes import Backend

import huabu.sdk as hs
from huabu.sdk import masks
from huabu.sdk.types import JobStatus


def test_models_list(backend: Backend) -> None:
    listing = backend.client.models.list()
    assert listing.object == "list" and listing.data
    assert all(m.object == "model" and m.id for m in listing.data)


def test_generate_b64_is_deterministic_and_described(backend: Backend) -> None:
    first = backend.client.images.generate("一只红狐狸 in snow", size=backend.size, steps=backend.steps, seed=11)
    again = backend.client.images.generate(
        "一只红狐狸 in snow", size=backend.size, steps=backend.steps, seed=11, cache="bypass"
    )
    image = first[0]
    assert first.request_id and image.seed == 11 and image.model and "@" in image.model
    assert image.image.size == backend.wh and image.bytes.startswith(b"\x89PNG")
    assert image.bytes == again[0].bytes
    assert image.metadata.get("seed") == "11"


def test_generate_url_and_n(backend: Backend, tmp_path) -> None:
    images = backend.client.images.generate(
        "a lighthouse", size=backend.size, steps=backend.steps, seed=3, n=2, response_format="url"
    )
    assert len(images) == 2 and all(i.url for i in images)
    assert images[0].seed != images[1].seed
    path = images[1].save(tmp_path / "lighthouse.png")
    assert path.read_bytes() == images[1].bytes


def test_edit_with_mask(backend: Backend) -> None:
    source = backend.client.images.generate("a cat", size=backend.size, steps=backend.steps, seed=1)[0]
    w, h = backend.wh
    mask = masks.rectangle((w, h), (0, 0, w // 2, h // 2))
    edited = backend.client.images.edit(source.bytes, "a cat with a hat", mask=mask, steps=backend.steps, seed=2)
    assert edited[0].image.size == (w, h) and edited[0].seed == 2


def test_outpaint(backend: Backend) -> None:
    source = backend.client.images.generate("a field", size=backend.size, steps=backend.steps, seed=1)[0]
    w, h = backend.wh
    wide = backend.client.images.outpaint(source.image, "a wide field", right=w, steps=backend.steps)
    assert wide[0].image.size == (2 * w, h)


def test_job_lifecycle_and_reattach(backend: Backend) -> None:
    handle = backend.client.jobs.submit("a boat", size=backend.size, steps=backend.steps, seed=4)
    assert handle.id and handle.job is not None and handle.job.kind == "generate"
    events = list(handle.events(timeout=300))
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)) and events[-1].is_terminal and all(e.job_id == handle.id for e in events)
    assert events[-1].status is JobStatus.succeeded
    images = handle.result()
    assert images.job_id == handle.id and images[0].seed == 4
    reattached = backend.client.jobs.get(handle.id)
    assert reattached.job is not None and reattached.job.status is JobStatus.succeeded
    assert reattached.result()[0].bytes == images[0].bytes


def test_cancel(backend: Backend) -> None:
    handle = backend.client.jobs.submit("a slow painting", size=backend.size, steps=backend.steps)
    handle.cancel()
    final = handle.wait(timeout=300)
    assert final.status in (JobStatus.canceled, JobStatus.succeeded)  # it may finish before the cancel lands


def test_errors_carry_request_id_and_param(backend: Backend) -> None:
    with pytest.raises(hs.NotFoundError) as missing:
        backend.client.jobs.get("job_does_not_exist")
    assert missing.value.request_id
    with pytest.raises(hs.APIStatusError) as unknown:
        backend.client.images.generate("x", model="no-such-model@9", size=backend.size)
    assert 400 <= unknown.value.status_code < 500 and unknown.value.param == "model"


async def test_async_client(backend: Backend) -> None:
    aclient = backend.aclient
    listing = await aclient.models.list()
    assert listing.data
    images = await aclient.images.generate("a fox", size=backend.size, steps=backend.steps, seed=5)
    assert images[0].seed == 5 and (await images[0].aload()).startswith(b"\x89PNG")
    handle = await aclient.jobs.submit("a fox", size=backend.size, steps=backend.steps, seed=5)
    events = [e async for e in handle.events(timeout=300)]
    assert events[-1].status is JobStatus.succeeded
    result = await handle.result()
    assert result[0].bytes == images[0].bytes
    w, h = backend.wh
    edited = await aclient.images.edit(
        images[0].bytes, "q", mask=masks.ellipse((w, h), (0, 0, w, h)), steps=backend.steps
    )
    assert edited[0].image.size == (w, h)
    wide = await aclient.images.outpaint(images[0].bytes, "q", bottom=h, steps=backend.steps)
    assert wide[0].image.size == (w, 2 * h)
    await aclient.close()
