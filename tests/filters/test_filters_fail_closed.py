"""Failing closed, in a deployed app: each filter model file is broken in turn (the intent classifier,
the exemplar file, the NSFW ONNX model). While one is broken, generation answers 503 with Retry-After
naming the filter, the event is logged with its cause and counted, and nothing is stored or cached;
once the file is fixed the filter loads on a later request and the app serves. One app for the module.
Also: odd prompts get a 400 naming the prompt or a clean decision, never a 500."""

from __future__ import annotations

import glob
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from huabu.filters.failclosed import FilterUnavailable, GuardedFilter
from huabu.filters.image import bundled_model_path
from huabu.filters.intent import bundled_classifier_path

pytestmark = pytest.mark.serve

EXEMPLARS = Path(__file__).resolve().parents[2] / "filters" / "data" / "exemplars_default.yaml"
REQUEST = {"prompt": "a red circle on a white table", "steps": 2}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    broken = {"classifier": d / "intent.npz", "exemplars": d / "exemplars.yaml", "onnx": d / "open-nsfw.onnx"}
    broken["classifier"].write_bytes(bundled_classifier_path().read_bytes()[:300])  # truncated
    broken["exemplars"].write_text("name: broken\nunsafe: [this is not a mapping\n", encoding="utf-8")
    broken["onnx"].write_bytes(b"\x08\x07not an onnx model" * 64)
    return broken


@pytest.fixture(scope="module")
def broken_app(deploy_app: Any, files: dict[str, Path]) -> Any:
    return deploy_app(
        lifetime="module",
        safety={
            "prompt": {
                "intent_classifier": str(files["classifier"]),
                "exemplars": [str(files["exemplars"])],
                "retry_after_s": 1,
            },
            "image": {"model_path": str(files["onnx"]), "retry_after_s": 1},
        },
    )


def _stats(c: httpx.Client) -> dict[str, Any]:
    stats: dict[str, Any] = c.get("/v1/admin/filters/stats").json()
    return stats


def _refused_by(c: httpx.Client, stage: str, timeout: float = 90.0) -> httpx.Response:
    """POST until the answer is a 503 from ``stage`` (a fixed file is picked up after Retry-After)."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.post("/v1/images/generations", json=REQUEST)
        if r.status_code == 503 and stage.replace("_", " ") in r.json()["error"]["message"]:
            return r
        assert r.status_code == 503, r.text  # nothing unscreened: never a 200 while a file is broken
        assert time.monotonic() < deadline, r.text
        time.sleep(1.1)


def _assert_refusal(r: httpx.Response) -> None:
    assert r.headers["retry-after"] == "1"
    error = r.json()["error"]
    assert error["type"] == "service_unavailable" and error["code"] == "filter_unavailable"


def _logs() -> str:
    """This session's worker and Serve logs (the replicas' own loggers write to the workers' stderr)."""
    import ray

    session = ray._private.worker._global_node.get_session_dir_path()  # this test session's Ray, not another's
    logs = os.path.join(session, "logs")
    paths = glob.glob(os.path.join(logs, "worker-*.err")) + glob.glob(os.path.join(logs, "serve", "*"))
    return "".join(Path(p).read_text(errors="ignore") for p in paths)


def test_each_broken_model_file_fails_closed_until_fixed(broken_app: Any, files: dict[str, Path]) -> None:
    storage = Path(broken_app.settings.storage.local_dir)
    with broken_app.client() as c:
        # 1. The intent classifier is truncated: the prompt filter cannot load.
        r = _refused_by(c, "prompt_filter")
        _assert_refusal(r)
        stats = _stats(c)["prompt_filter"]
        assert stats["available"] is False and stats["unavailable_by_reason"]["load"] >= 1
        assert stats["checked"] == 0  # nothing was screened, so nothing went on
        assert f"IntentModelError: intent classifier {files['classifier']}" in _logs()

        # 2. Classifier fixed; the exemplar file is still corrupt: still refused, now for the exemplars.
        shutil.copyfile(bundled_classifier_path(), files["classifier"])
        time.sleep(1.1)
        _assert_refusal(_refused_by(c, "prompt_filter"))
        assert f"exemplar file {files['exemplars']}" in _logs()

        # 3. Exemplars fixed: prompts are screened, but the NSFW model does not load: the generated
        #    image is refused, not returned, stored or cached.
        shutil.copyfile(EXEMPLARS, files["exemplars"])
        time.sleep(1.1)
        _assert_refusal(_refused_by(c, "image_filter"))
        stats = _stats(c)
        assert stats["prompt_filter"]["available"] is True and stats["prompt_filter"]["checked"] >= 1
        assert stats["image_filter"]["available"] is False
        assert stats["image_filter"]["unavailable_by_reason"]["load"] >= 1
        assert not list(storage.rglob("*.png"))
        assert "image_filter failed closed (load)" in _logs()
        assert c.get("/v1/admin/cache/stats").json()["entries"] == 0

        # 4. Everything fixed: the app serves again without a redeploy.
        shutil.copyfile(bundled_model_path(), files["onnx"])
        deadline = time.monotonic() + 90
        while (r := c.post("/v1/images/generations", json=REQUEST)).status_code == 503:
            assert time.monotonic() < deadline, r.text
            time.sleep(1.1)
        assert r.status_code == 200, r.text
        assert _stats(c)["image_filter"]["available"] is True


@pytest.mark.parametrize(
    "prompt",
    [
        "",
        "   \t\n ",
        "a cat " * 1700,  # ~10k characters
        "a cat\x00\x07\x1b[31m on a mat\x7f",
        "\u202eenilno\u202c a cat \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u200f",
    ],
    ids=["empty", "whitespace", "10k", "control", "rtl"],
)
def test_odd_prompts_get_a_400_or_a_clean_decision(broken_app: Any, prompt: str) -> None:
    # Runs after the test above has fixed every file: a healthy app.
    with broken_app.client() as c:
        r = c.post("/v1/images/generations", json={"prompt": prompt, "steps": 2})
    assert r.status_code in (200, 400), r.text
    if r.status_code == 400:
        error = r.json()["error"]
        assert error["param"] == "prompt" or error["type"] == "content_policy_violation", error


async def test_a_check_that_errors_or_overruns_is_refused_and_counted() -> None:
    # Run-time failures (an onnxruntime error, an embedding that hangs) on the guard the stages use.
    class Slow:
        def __init__(self, counters: Any) -> None:
            self.counters = counters

        def warmup(self) -> None:
            pass

    guard = GuardedFilter("prompt_filter", Slow, timeout_s=0.2, retry_after_s=3)
    assert guard.load()
    with pytest.raises(FilterUnavailable) as timeout:
        await guard.run(lambda f: time.sleep(1.0))
    with pytest.raises(FilterUnavailable) as error:
        await guard.run(lambda f: 1 / 0)
    assert (timeout.value.reason, error.value.reason, error.value.retry_after_s) == ("timeout", "error", 3)
    assert guard.counters.snapshot()["unavailable_by_reason"] == {"timeout": 1, "error": 1}
    assert await guard.run(lambda f: "decided") == "decided"

    def broken(counters: Any) -> Slow:
        raise OSError("model file truncated")

    failing = GuardedFilter("image_filter", broken, timeout_s=1, retry_after_s=60)
    assert not failing.load()
    with pytest.raises(FilterUnavailable, match="image filter cannot screen"):
        await failing.run(lambda f: "never")
