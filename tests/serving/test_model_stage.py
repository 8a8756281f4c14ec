"""The model deployment's compute thread (no Ray needed: the thread is plain Python)."""

import re
import threading

import pytest
import torch

from huabu.deployments.model import compute_thread


def openmp_threads() -> int:
    """The calling thread's OpenMP thread count (``torch.get_num_threads`` reports a global)."""
    found = re.search(r"omp_get_max_threads\(\) : (\d+)", torch.__config__.parallel_info())
    assert found is not None
    return int(found.group(1))


def test_the_pipeline_thread_computes_with_the_configured_torch_threads() -> None:
    # Set in any other thread, the count would not reach the one that computes: a new thread
    # starts from OMP_NUM_THREADS (or the core count), whatever the process set.
    torch.set_num_threads(1)
    seen: list[int] = []
    plain = threading.Thread(target=lambda: seen.append(openmp_threads()))
    plain.start()
    plain.join()
    wanted = seen[0] + 1
    with compute_thread(wanted) as pool:
        assert pool.submit(openmp_threads).result() == wanted
        assert pool.submit(openmp_threads).result() == wanted  # the same thread, batch after batch


@pytest.mark.serve
def test_a_batch_out_of_gpu_memory_is_a_503_that_says_what_to_change_and_the_replica_serves_on(deploy_app) -> None:
    """The fixed-latency backend with a card of 48x48 pixels raises torch.OutOfMemoryError as a GPU
    would for a larger batch; the model stage answers that batch 503 with Retry-After and a message
    naming the remedy, and the same replica answers the next request that fits."""
    app = deploy_app(lifetime="test", model={"fixed_latency": {"seconds": 0.01, "memory_pixels": 48 * 48}})
    body = {"prompt": "a red circle", "steps": 2, "cache": "bypass"}
    with app.client() as c:
        too_big = c.post("/v1/images/generations", json={**body, "size": "64x64"})
        assert too_big.status_code == 503, too_big.text
        assert too_big.headers["retry-after"]
        error = too_big.json()["error"]
        assert "ran out of GPU memory" in error["message"] and "smaller size" in error["message"]
        for _ in range(2):  # the replica goes on
            fits = c.post("/v1/images/generations", json={**body, "size": "32x32"})
            assert fits.status_code == 200, fits.text
