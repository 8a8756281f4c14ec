"""The wire types: what the server accepts and what both sides parse."""

from __future__ import annotations

import base64
import importlib
import typing

import pydantic
import pytest

from huabu.sdk import types as t

PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def test_generation_defaults_and_normalisation() -> None:
    req = t.ImageGenerationRequest(prompt="  一只狐狸 fox  ", size="64X32")
    assert req.prompt == "一只狐狸 fox"
    assert req.size == "64x32" and req.dimensions == (64, 32)
    assert (req.n, req.response_format, req.cache) == (1, "b64_json", "use")
    assert t.ImageGenerationRequest(prompt="x").dimensions is None


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * (t.MAX_PROMPT_CHARS + 1)}, "prompt"),
        ({"prompt": "x", "size": "64"}, "size"),
        ({"prompt": "x", "size": "0x64"}, "size"),
        ({"prompt": "x", "size": "99999x64"}, "size"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "n": 5}, "n"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "steps": 0}, "steps"),
        ({"prompt": "x", "guidance_scale": 100}, "guidance_scale"),
        ({"prompt": "x", "cache": "maybe"}, "cache"),
        ({"prompt": "x", "response_format": "png"}, "response_format"),
        ({"prompt": "x", "model": "../../etc/passwd"}, "model"),
        ({"prompt": "x", "stpes": 3}, "stpes"),  # typos are errors, not silently ignored
    ],
)
def test_generation_rejects_bad_fields_naming_the_param(fields: dict[str, object], param: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        t.ImageGenerationRequest.model_validate(fields)
    assert info.value.errors()[0]["loc"] == (param,)


def test_model_names() -> None:
    assert t.ImageGenerationRequest(prompt="x", model="tiny@1.0").model == "tiny@1.0"
    assert t.ImageGenerationRequest(prompt="x", model="qwen-image").model == "qwen-image"


def test_edit_request_accepts_multipart_strings() -> None:
    req = t.ImageEditRequest.model_validate({"prompt": "x", "n": "2", "strength": "0.5", "seed": "7"})
    assert (req.n, req.strength, req.seed) == (2, 0.5, 7)
    with pytest.raises(pydantic.ValidationError):
        t.ImageEditRequest.model_validate({"prompt": "x", "strength": "1.5"})


def test_outpaint_request() -> None:
    req = t.OutpaintRequest(prompt="x", image="data:image/png;base64," + PNG_B64, right=16)
    assert req.image == PNG_B64 and req.image_bytes().startswith(b"\x89PNG")
    with pytest.raises(pydantic.ValidationError, match="at least one"):
        t.OutpaintRequest(prompt="x", image=PNG_B64)
    with pytest.raises(pydantic.ValidationError, match="base64"):
        t.OutpaintRequest(prompt="x", image="not base64!", left=1)


def test_job_request_is_discriminated_by_kind() -> None:
    gen = t.job_request_adapter.validate_python({"kind": "generate", "prompt": "x", "seed": 1})
    assert isinstance(gen, t.GenerateJobRequest)
    edit = t.job_request_adapter.validate_json(f'{{"kind": "edit", "prompt": "x", "image": "{PNG_B64}"}}')
    assert isinstance(edit, t.EditJobRequest) and edit.mask_bytes() is None
    out = t.job_request_adapter.validate_python({"kind": "outpaint", "prompt": "x", "image": PNG_B64, "top": 8})
    assert isinstance(out, t.OutpaintJobRequest)
    with pytest.raises(pydantic.ValidationError) as info:
        t.job_request_adapter.validate_python({"kind": "generate", "prompt": "x", "size": "big"})
    assert info.value.errors()[0]["loc"] == ("generate", "size")
    with pytest.raises(pydantic.ValidationError):
        t.job_request_adapter.validate_python({"kind": "upscale", "prompt": "x"})
    # the SDK always sends kind (a default, so exclude_none keeps it)
    assert t.GenerateJobRequest(prompt="x").model_dump(exclude_none=True)["kind"] == "generate"


def test_responses_are_lenient_and_openai_shaped() -> None:
    minimal = t.ImagesResponse.model_validate({"created": 1, "data": [{"b64_json": "AAAA"}], "usage": {"x": 1}})
    item = minimal.data[0]
    assert (item.cached, item.prompt_truncated, item.metadata, item.seed) == (False, False, {}, None)
    models = t.ModelList.model_validate({"object": "list", "data": [{"id": "tiny@1", "object": "model"}]})
    assert models.data[0].owned_by == "huabu"


def test_official_openai_types_parse_our_responses() -> None:
    openai_types = importlib.import_module("openai.types")
    ours = t.ImagesResponse(created=5, data=[t.ImageData(b64_json="AAAA", seed=3, model="tiny@1", cached=True)])
    theirs = openai_types.ImagesResponse.model_validate(ours.model_dump(mode="json"))
    assert theirs.created == 5 and theirs.data is not None and theirs.data[0].b64_json == "AAAA"
    model = openai_types.Model.model_validate(t.ModelInfo(id="tiny@1", created=1).model_dump(mode="json"))
    assert model.id == "tiny@1"


def test_error_types_and_statuses_agree() -> None:
    assert set(typing.get_args(t.ErrorType)) == set(t.ERROR_STATUS) == set(t.ERROR_TYPES)
    body = t.ErrorResponse(error=t.ErrorBody(message="m", type="content_policy_violation", code="violence"))
    assert body.model_dump() == {
        "error": {"message": "m", "type": "content_policy_violation", "param": None, "code": "violence"}
    }


def test_job_and_events() -> None:
    job = t.Job(id="j", status="running", kind="generate", created_at=1, updated_at=2)
    assert job.progress.fraction == 0.0 and not job.status.is_terminal
    assert {s for s in t.JobStatus if s.is_terminal} == {
        t.JobStatus.succeeded,
        t.JobStatus.failed,
        t.JobStatus.canceled,
    }
    event = t.JobEvent(type="progress", job_id="j", seq=3, status="running", step=2, total=4)
    assert t.JobEvent.model_validate_json(event.model_dump_json()) == event
    assert str(t.JobStatus.queued) == "queued"


def test_feedback_needs_exactly_one_target() -> None:
    image_id, job_id = "f" * 64, "job_" + "0" * 24
    assert t.FeedbackRequest(image_id=image_id, accepted=True).job_id is None
    for bad in ({"accepted": True}, {"image_id": image_id, "job_id": job_id, "accepted": False}):
        with pytest.raises(pydantic.ValidationError, match="exactly one"):
            t.FeedbackRequest.model_validate(bad)
    # Ids in the forms the server issues them, or a message that says which form.
    for field, bad_id in (("image_id", "i"), ("image_id", "F" * 64), ("job_id", "j"), ("job_id", job_id + ":events")):
        with pytest.raises(pydantic.ValidationError, match=f"{field} must be"):
            t.FeedbackRequest.model_validate({field: bad_id, "accepted": True})
