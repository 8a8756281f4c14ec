import pytest

from huabu.deployments.backends.mmdit.checkpoint import random_init
from huabu.deployments.backends.mmdit.pipeline import Pipeline


@pytest.fixture(scope="session")
def pipeline() -> Pipeline:
    return Pipeline(random_init(seed=0))
