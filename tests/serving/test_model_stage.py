"""The model deployment's compute thread (no Ray needed: the thread is plain Python)."""

import re
import threading

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
